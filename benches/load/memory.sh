#!/usr/bin/env bash
# Memory and connections, one command: benches/load/memory.sh
#
# 1. slotproxy's RSS before and after fixed-count runs (RUNS x REQUESTS
#    requests, alternating cookieless and pinned clients): it must not grow.
# 2. RSS with IDLE idle keep-alive client connections held open, for
#    slotproxy and, for scale, bare pingora, nginx and HAProxy doing the same
#    job.
#
# Settings (env): REQUESTS=500000 per run, RUNS=3, CONNS=50, IDLE=10000,
# SKIP_BUILD=1, KEEP_TMP=1. Same pinning as run.sh.
source "$(dirname "$0")/common.sh"

REQUESTS="${REQUESTS:-500000}"
RUNS="${RUNS:-3}"
CONNS="${CONNS:-50}"
IDLE="${IDLE:-10000}"
PIN_COOKIE="session=8f14e45fceea167a; x-ms-routing-name=staging"

install_missing
build
ulimit -n "$(ulimit -Hn)"
log "ulimit -n $(ulimit -n)"
start_upstream
start_slotproxy
start_bare
start_nginx
start_haproxy

# fixed-count run: wrk stops itself after REQUESTS responses
run_count() {
  local cookie=$1
  local args=(-t1 "-c$CONNS" -d600s -H "Host: bench.local" -s "$HERE/count.lua")
  [ -n "$cookie" ] && args+=(-H "Cookie: $cookie")
  REQUESTS="$REQUESTS" taskset -c "$CLIENT_CPU" wrk "${args[@]}" "http://127.0.0.1:$SLOTPROXY_PORT/" | grep '^RESULT'
}

log "slotproxy RSS across fixed-count runs ($RUNS x $REQUESTS requests after a warm-up of $((REQUESTS / 5)))"
echo
echo "| after | requests so far | RSS MiB | errors |"
echo "| --- | ---: | ---: | ---: |"
echo "| start | 0 | $(awk -v k="$(rss_kb "$SLOTPROXY_PID")" 'BEGIN {printf "%.1f", k / 1024}') | 0 |"
total=0
for i in $(seq 0 "$RUNS"); do
  if [ "$i" = 0 ]; then
    label="warm-up"
    out=$(REQUESTS=$((REQUESTS / 5)) run_count "")
  elif [ $((i % 2)) = 0 ]; then
    label="run $i (pinned)"
    out=$(run_count "$PIN_COOKIE")
  else
    label="run $i (cookieless)"
    out=$(run_count "")
  fi
  n=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<< "$out")
  errs=$(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^(socket_errors|non2xx)=/) {split($i, kv, "="); e += kv[2]}} END {print e + 0}' <<< "$out")
  total=$((total + n))
  echo "| $label | $total | $(awk -v k="$(rss_kb "$SLOTPROXY_PID")" 'BEGIN {printf "%.1f", k / 1024}') | $errs |"
done

log "RSS with $IDLE idle keep-alive connections"
echo
echo "| server | idle connections | RSS before MiB | RSS held MiB | KiB per connection | RSS after close MiB |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
python3 "$HERE/idle_conns.py" slotproxy "$SLOTPROXY_PORT" "$IDLE" "$SLOTPROXY_PID"
python3 "$HERE/idle_conns.py" bare-pingora "$BARE_PORT" "$IDLE" "$BARE_PID"
python3 "$HERE/idle_conns.py" nginx "$NGINX_PORT" "$IDLE" "$NGINX_PID"
# HAProxy refuses more than maxconn, which the fd limit caps (see common.sh)
python3 "$HERE/idle_conns.py" haproxy "$HAPROXY_PORT" "$(( IDLE < HAPROXY_MAXCONN - 50 ? IDLE : HAPROXY_MAXCONN - 50 ))" "$HAPROXY_PID"
for p in "$SLOTPROXY_PID" "$BARE_PID" "$NGINX_PID" "$HAPROXY_PID"; do
  kill -0 "$p" 2>/dev/null || { echo "a server died during the run (pid $p)" >&2; exit 1; }
done
