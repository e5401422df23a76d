#!/usr/bin/env bash
# Memory and connections, one command: benches/load/memory.sh
#
# 1. slotproxy's RSS before and after fixed-count runs (RUNS x REQUESTS
#    requests, alternating cookieless and pinned clients): it must not grow.
# 2. RSS with IDLE idle keep-alive client connections held open, for
#    slotproxy and, for scale, bare pingora, nginx and HAProxy doing the same
#    job.
#
# Settings (env): REQUESTS=500000 per run, RUNS=4, CONNS=50, IDLE=10000,
# SKIP_BUILD=1, KEEP_TMP=1, BEFORE_SLOTPROXY=path (idle test of another
# build too), WORKERS=1 (common.sh: worker threads of every proxy; 2 shows
# whether memory freed on one worker thread and owned by another still goes
# back). Same pinning as run.sh.
source "$(dirname "$0")/common.sh"

REQUESTS="${REQUESTS:-500000}"
RUNS="${RUNS:-4}"
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
if [ -n "${BEFORE_SLOTPROXY:-}" ]; then
  port=$SLOTPROXY_PORT pid=$SLOTPROXY_PID
  start_slotproxy slotproxy-before "$BEFORE_SLOTPROXY"
  BEFORE_PORT=$SLOTPROXY_PORT BEFORE_PID=$SLOTPROXY_PID
  SLOTPROXY_PORT=$port SLOTPROXY_PID=$pid
fi

# fixed-count run: h2load (HTTP/1.1 here) sends exactly REQUESTS requests;
# prints "requests-done errors", errors being every request without a 2xx
run_count() {
  local n=$1 cookie=$2
  # h2load takes the Host of an HTTP/1 request from :authority
  local args=(--h1 -n "$n" -c "$CONNS" -t 1 -H ":authority: bench.local")
  [ -n "$cookie" ] && args+=(-H "Cookie: $cookie")
  taskset -c "$CLIENT_CPU" h2load "${args[@]}" "http://127.0.0.1:$SLOTPROXY_PORT/" |
    awk '/^requests:/ {total = $2; done = $6} /^status codes:/ {ok = $3}
         END {print done + 0, total - ok}'
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
    out=$(run_count $((REQUESTS / 5)) "")
  elif [ $((i % 2)) = 0 ]; then
    label="run $i (pinned)"
    out=$(run_count "$REQUESTS" "$PIN_COOKIE")
  else
    label="run $i (cookieless)"
    out=$(run_count "$REQUESTS" "")
  fi
  read -r n errs <<< "$out"
  total=$((total + n))
  echo "| $label | $total | $(awk -v k="$(rss_kb "$SLOTPROXY_PID")" 'BEGIN {printf "%.1f", k / 1024}') | $errs |"
done

log "RSS with $IDLE idle keep-alive connections"
echo
echo "| server | idle connections | RSS before MiB | RSS held MiB | KiB per connection | RSS after close MiB |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
python3 "$HERE/idle_conns.py" slotproxy "$SLOTPROXY_PORT" "$IDLE" "$SLOTPROXY_PID"
if [ -n "${BEFORE_SLOTPROXY:-}" ]; then
  python3 "$HERE/idle_conns.py" slotproxy-before "$BEFORE_PORT" "$IDLE" "$BEFORE_PID"
fi
python3 "$HERE/idle_conns.py" bare-pingora "$BARE_PORT" "$IDLE" "$BARE_PID"
python3 "$HERE/idle_conns.py" nginx "$NGINX_PORT" "$IDLE" "$NGINX_PID"
# HAProxy refuses more than maxconn, which the fd limit caps (see common.sh)
python3 "$HERE/idle_conns.py" haproxy "$HAPROXY_PORT" "$(( IDLE < HAPROXY_MAXCONN - 50 ? IDLE : HAPROXY_MAXCONN - 50 ))" "$HAPROXY_PID"
for p in "$SLOTPROXY_PID" "$BARE_PID" "$NGINX_PID" "$HAPROXY_PID"; do
  kill -0 "$p" 2>/dev/null || { echo "a server died during the run (pid $p)" >&2; exit 1; }
done
