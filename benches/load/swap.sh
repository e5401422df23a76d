#!/usr/bin/env bash
# Swap under load, one command: benches/load/swap.sh
#
# wrk keeps slotproxy (one worker, core PROXY_CPU) busy with CONNS keep-alive
# connections while staging and production are swapped through the admin API
# at increasing rates (RATES, swaps per second; 0 = back to back). For each
# rate it prints the swaps done, the failed requests (socket errors and
# non-2xx) and p99, next to a run without swaps, then the highest rate that
# lost no request and the p99 it added.
#
# Settings (env): DURATION=5 seconds per run, CONNS=50, RATES="1 5 20 0",
# SKIP_BUILD=1 to reuse target/release, KEEP_TMP=1 to keep configs and logs.
source "$(dirname "$0")/common.sh"

DURATION="${DURATION:-5}"
CONNS="${CONNS:-50}"
RATES="${RATES:-1 5 20 0}"

install_missing
build
ulimit -n "$(ulimit -Hn)"
log "machine: $(nproc) cores, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
start_upstream
start_slotproxy

# run_wrk SECONDS: one RESULT line
run_wrk() {
  taskset -c "$CLIENT_CPU" wrk -t1 "-c$CONNS" "-d${1}s" -H "Host: bench.local" \
    -s "$HERE/report.lua" "http://127.0.0.1:$SLOTPROXY_PORT/" | grep '^RESULT'
}
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<< "$2"; }

run_wrk 1 > /dev/null # warm-up
log "baseline: ${DURATION}s without swaps"
base=$(run_wrk "$DURATION")
base_p99=$(field p99_us "$base")

printf '\n%-10s %7s %9s %7s %10s %9s %10s %8s\n' "rate/s" swaps "swaps/s" failed "req/s" "p99 ms" "+p99 ms" errors
row() { # label swaps-line wrk-line
  local label=$1 swaps=$2 w=$3 done=0 sfail=0 secs=1
  if [ -n "$swaps" ]; then
    done=$(field done "$swaps"); sfail=$(field failed "$swaps"); secs=$(field seconds "$swaps")
  fi
  local reqs secs_w p99 errs
  reqs=$(field requests "$w"); secs_w=$(field seconds "$w"); p99=$(field p99_us "$w")
  errs=$(( $(field socket_errors "$w") + $(field non2xx "$w") ))
  awk -v l="$label" -v d="$done" -v s="$secs" -v f="$sfail" -v r="$reqs" -v sw="$secs_w" \
      -v p="$p99" -v b="$base_p99" -v e="$errs" 'BEGIN {
    printf "%-10s %7d %9.1f %7d %10.0f %9.2f %10.2f %8d\n", l, d, d / s, f, r / sw, p / 1000, (p - b) / 1000, e }'
  echo "$label $done $sfail $errs $p99" >> "$TMP/rows"
}
: > "$TMP/rows"
row "none" "" "$base"
for rate in $RATES; do
  taskset -c "$CLIENT_CPU" python3 "$HERE/swap_loop.py" "$SLOTPROXY_ADMIN_PORT" "$rate" "$DURATION" > "$TMP/swaps.out" &
  loop=$!
  w=$(run_wrk "$DURATION")
  wait "$loop"
  label=$rate; [ "$rate" = 0 ] && label="max"
  row "$label" "$(grep '^SWAPS' "$TMP/swaps.out")" "$w"
done
kill -0 "$SLOTPROXY_PID" 2>/dev/null || { echo "slotproxy died during the run; logs in $TMP" >&2; KEEP_TMP=1; exit 1; }

echo
awk -v secs="$DURATION" '$1 != "none" && $4 == 0 && $3 == 0 {
    rate = $2 / secs; if (rate > best) { best = rate; p99 = $5 } }
  $1 == "none" { base = $5 }
  END {
    if (best > 0) printf "highest swap rate with zero failed requests and swaps: %.1f swaps/s; p99 there %.2f ms (%+.2f ms over no swaps)\n", best, p99 / 1000, (p99 - base) / 1000
    else print "no swap rate ran without failed requests or swaps" }' "$TMP/rows"
