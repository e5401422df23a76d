#!/usr/bin/env bash
# Binary upgrade under keep-alive load, one command: benches/load/upgrade.sh
#
# wrk keeps CONNS keep-alive connections busy on slotproxy while a second
# process is started with `serve --upgrade` and the first gets SIGQUIT (the
# steps of docs/operations/upgrade.md), once with `drain_secs = 0` and once with
# `drain_secs = DRAIN`. During the drain every response of the old process
# says `Connection: close`, so clients move between requests; with 0 the
# drain is only pingora's own 5 s hand-over pause before the old process
# closes the connections idle between two requests. For each it prints
# wrk's requests and socket errors by kind; the target is 0.
#
# Settings (env): DURATION=15 seconds per run (the upgrade starts after
# UPGRADE_AT=3), CONNS=20, DRAIN=3, SKIP_BUILD=1 to reuse target/release,
# SLOTPROXY_BIN=path to run another build, KEEP_TMP=1 to keep configs/logs.
source "$(dirname "$0")/common.sh"

DURATION="${DURATION:-15}"
UPGRADE_AT="${UPGRADE_AT:-3}"
CONNS="${CONNS:-20}"
DRAIN="${DRAIN:-3}"

install_missing
if [ -n "${SLOTPROXY_BIN:-}" ]; then
  SLOTPROXY="$SLOTPROXY_BIN"
else
  build
fi
ulimit -n "$(ulimit -Hn)"
log "machine: $(nproc) cores, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
start_upstream

field() { sed -n "s/.*[ ]$1=\([0-9.]*\).*/\1/p" <<< "$2"; }

# upgrade_run NAME DRAIN_SECS: wrk across one upgrade; its RESULT line in
# $TMP/NAME.result (not a subshell, so cleanup knows every process)
upgrade_run() {
  local name=$1 drain=$2
  SLOTPROXY_SERVER_EXTRA="drain_secs = $drain
grace_period_secs = 2
graceful_shutdown_timeout_secs = 1" start_slotproxy "$name"
  local old=$SLOTPROXY_PID
  taskset -c "$CLIENT_CPU" wrk -t1 "-c$CONNS" "-d${DURATION}s" -H "Host: bench.local" \
    -s "$HERE/report.lua" "http://127.0.0.1:$SLOTPROXY_PORT/" > "$TMP/$name.wrk" &
  local wrk=$!
  sleep "$UPGRADE_AT"
  taskset -c "$PROXY_CPU" "$SLOTPROXY" serve --upgrade --config "$TMP/$name.toml" >> "$TMP/$name.log" 2>&1 &
  local new=$!
  PIDS+=($new)
  kill -QUIT "$old"
  wait "$wrk"
  # the old process must be gone (5 s hand-over + drain + grace), the new one serving
  local deadline=$((SECONDS + 60))
  while kill -0 "$old" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "old process $old still running; logs in $TMP" >&2; KEEP_TMP=1; exit 1; }
    sleep 0.2
  done
  kill -0 "$new" 2>/dev/null || { echo "new process died; logs in $TMP" >&2; KEEP_TMP=1; exit 1; }
  wait_http "$SLOTPROXY_PORT"
  kill "$new"
  wait "$new" 2>/dev/null || true
  grep '^RESULT' "$TMP/$name.wrk" > "$TMP/$name.result"
}

printf '\n%-16s %10s %8s %13s %8s %6s %6s %8s %7s\n' run requests "req/s" socket_errors connect read write timeout non2xx
row() { # label wrk-line
  local w=$2
  awk -v l="$1" -v r="$(field requests "$w")" -v s="$(field seconds "$w")" \
      -v e="$(field socket_errors "$w")" -v c="$(field err_connect "$w")" -v rd="$(field err_read "$w")" \
      -v wr="$(field err_write "$w")" -v t="$(field err_timeout "$w")" -v n="$(field non2xx "$w")" 'BEGIN {
    printf "%-16s %10d %8.0f %13d %8d %6d %6d %8d %7d\n", l, r, r / s, e, c, rd, wr, t, n }'
}
upgrade_run nodrain 0
row "drain_secs = 0" "$(cat "$TMP/nodrain.result")"
upgrade_run drain "$DRAIN"
with=$(cat "$TMP/drain.result")
row "drain_secs = $DRAIN" "$with"
echo
errs=$(( $(field socket_errors "$with") + $(field non2xx "$with") ))
echo "across the upgrade with the drain: $errs failed requests (target 0)"
[ "$errs" -eq 0 ]
