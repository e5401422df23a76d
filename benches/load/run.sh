#!/usr/bin/env bash
# The load benchmark, one command: benches/load/run.sh
#
# Installs nginx, HAProxy and wrk when missing, builds slotproxy and
# examples/bare_pingora in release, starts every target once and measures them
# interleaved (round 1: A B C ..., round 2: A B C ...) so drift on a shared
# machine hits all of them alike. One worker each; the proxy under test runs
# on core PROXY_CPU (1), wrk and the upstream on core CLIENT_CPU (0).
#
# The `-h2c` targets are measured with h2load instead of wrk: HTTP/2 with
# prior knowledge, STREAMS (10) concurrent streams on each connection; the
# `-h2` targets likewise over TLS (ALPN h2). The `-https` targets are wrk's
# HTTP/1.1 over TLS. Every proxy serves the same certificate
# (tests/fixtures/tls-cert.pem).
# The `-post` targets send every request as a POST with a BODY_BYTES (1024)
# body (report.lua), which the upstream reads and discards.
#
# Settings (env): DURATION=5 seconds per measurement, ROUNDS=3, CONNS=50
# keep-alive connections, WARMUP=1 second per target before round 1,
# SKIP_BUILD=1 to reuse target/release, KEEP_TMP=1 to keep configs and logs.
# BEFORE_SLOTPROXY=path and BEFORE_BARE=path add two more targets, e.g. the
# binaries of an older commit, measured in the same interleaved rounds.
# FLOORS=1 adds the floors of pingora's layers (examples/floors.rs): nginx
# answering from memory (`nginx-memory`, on the proxy core) beside a
# pingora-core HTTP app doing the same (`floor-memory`), and that app
# forwarding through pingora-core's connector and pool (`floor-forward`),
# and an h2c server of the h2 crate answering from memory with slotproxy's
# HTTP/2 settings (`floor-memory-h2c`, measured with h2load as the -h2c rows).
# ONLY=regex keeps only the targets whose name matches (e.g. to re-run a few).
# WORKERS=2 runs every proxy with two workers on both cores (common.sh), which
# wrk and the upstream share: the 1 -> 2 scaling figure.
# The `slotproxy-shadow` target is a second slotproxy whose staging slot
# shadows production at 10 % (`[sites.slots.shadow] percent = 10`, the
# copies going to a second upstream port): against `slotproxy` in the same
# run it shows what a shadow costs production's clients (p99) and the
# proxy (CPU µs/req, the copies' sending and comparing included).
# RATE=N measures every target at a fixed N requests per second in all (h2load
# --rps, N/CONNS per connection; HTTP/1.1 with --h1) instead of at saturation:
# latency compared at one request rate, which wrk cannot hold.
source "$(dirname "$0")/common.sh"

DURATION="${DURATION:-5}"
ROUNDS="${ROUNDS:-3}"
CONNS="${CONNS:-50}"
WARMUP="${WARMUP:-1}"
PIN_COOKIE="session=8f14e45fceea167a; x-ms-routing-name=staging"

install_missing
build
ulimit -n "$(ulimit -Hn)"

log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
log "versions: $(nginx -v 2>&1 | cut -d' ' -f3), $(haproxy -v | head -1 | cut -d' ' -f1-3), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), slotproxy $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- src Cargo.toml examples || echo '+dirty')"
log "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) (other work on these cores lowers every req/s; CPU µs/req moves least)"
log "starting upstream, slotproxy, bare pingora, nginx, HAProxy (temp dir $TMP)"
start_upstream
start_slotproxy
start_bare
start_nginx
start_haproxy
EXTRA=()
port=$SLOTPROXY_PORT pid=$SLOTPROXY_PID tls=$SLOTPROXY_TLS_PORT
SLOTPROXY_STAGING_EXTRA=$'[sites.slots.shadow]\npercent = 10' \
  STAGING_UPSTREAM_PORT=$SHADOW_UPSTREAM_PORT start_slotproxy slotproxy-shadow
SHADOW_PORT=$SLOTPROXY_PORT SHADOW_PID=$SLOTPROXY_PID SHADOW_ADMIN_PORT=$SLOTPROXY_ADMIN_PORT
SLOTPROXY_PORT=$port SLOTPROXY_PID=$pid SLOTPROXY_TLS_PORT=$tls
if [ -n "${BEFORE_SLOTPROXY:-}" ]; then
  port=$SLOTPROXY_PORT pid=$SLOTPROXY_PID
  start_slotproxy slotproxy-before "$BEFORE_SLOTPROXY"
  EXTRA+=("slotproxy-before|$SLOTPROXY_PORT||$SLOTPROXY_PID")
  EXTRA+=("slotproxy-before-post|$SLOTPROXY_PORT||$SLOTPROXY_PID")
  SLOTPROXY_PORT=$port SLOTPROXY_PID=$pid
fi
if [ -n "${BEFORE_BARE:-}" ]; then
  port=$BARE_PORT pid=$BARE_PID
  start_bare bare-before "$BEFORE_BARE"
  EXTRA+=("bare-pingora-before|$BARE_PORT||$BARE_PID")
  BARE_PORT=$port BARE_PID=$pid
fi
if [ "${FLOORS:-0}" = 1 ]; then
  start_nginx_memory
  EXTRA+=("nginx-memory|$NGINX_MEMORY_PORT||$NGINX_MEMORY_PID")
  start_floor memory
  EXTRA+=("floor-memory|$FLOOR_PORT||$FLOOR_PID")
  start_floor forward
  EXTRA+=("floor-forward|$FLOOR_PORT||$FLOOR_PID")
  start_floor h2c-memory
  EXTRA+=("floor-memory-h2c|$FLOOR_PORT||$FLOOR_PID")
fi
UPSTREAM_PID=$(cat "$TMP/upstream.pid")

log "sanity checks (each target must route, pin and set cookies like slotproxy)"
python3 "$HERE/sanity.py" direct "$UPSTREAM_PORT" --direct
python3 "$HERE/sanity.py" bare-pingora "$BARE_PORT" --direct
python3 "$HERE/sanity.py" slotproxy "$SLOTPROXY_PORT"
python3 "$HERE/sanity.py" slotproxy-shadow "$SHADOW_PORT"
python3 "$HERE/sanity.py" nginx "$NGINX_PORT"
python3 "$HERE/sanity.py" haproxy "$HAPROXY_PORT"

# name port cookie pids-to-account-cpu-to
TARGETS=(
  "direct|$UPSTREAM_PORT||$UPSTREAM_PID"
  "bare-pingora|$BARE_PORT||$BARE_PID"
  "slotproxy|$SLOTPROXY_PORT||$SLOTPROXY_PID"
  "slotproxy-shadow|$SHADOW_PORT||$SHADOW_PID"
  "slotproxy-pinned|$SLOTPROXY_PORT|$PIN_COOKIE|$SLOTPROXY_PID"
  "nginx|$NGINX_PORT||$NGINX_PID"
  "nginx-pinned|$NGINX_PORT|$PIN_COOKIE|$NGINX_PID"
  "haproxy|$HAPROXY_PORT||$HAPROXY_PID"
  "haproxy-pinned|$HAPROXY_PORT|$PIN_COOKIE|$HAPROXY_PID"
  "direct-post|$UPSTREAM_PORT||$UPSTREAM_PID"
  "slotproxy-post|$SLOTPROXY_PORT||$SLOTPROXY_PID"
  "nginx-post|$NGINX_PORT||$NGINX_PID"
  "haproxy-post|$HAPROXY_PORT||$HAPROXY_PID"
  "slotproxy-https|$SLOTPROXY_TLS_PORT||$SLOTPROXY_PID"
  "nginx-https|$NGINX_TLS_PORT||$NGINX_PID"
  "haproxy-https|$HAPROXY_TLS_PORT||$HAPROXY_PID"
  "slotproxy-h2|$SLOTPROXY_TLS_PORT||$SLOTPROXY_PID"
  "nginx-h2|$NGINX_TLS_PORT||$NGINX_PID"
  "haproxy-h2|$HAPROXY_TLS_PORT||$HAPROXY_PID"
  "slotproxy-h2c|$SLOTPROXY_PORT||$SLOTPROXY_PID"
  "nginx-h2c|$NGINX_H2_PORT||$NGINX_PID"
  "haproxy-h2c|$HAPROXY_H2C_PORT||$HAPROXY_PID"
  ${EXTRA[@]+"${EXTRA[@]}"}
)
if [ -n "${ONLY:-}" ]; then
  KEPT=()
  for t in "${TARGETS[@]}"; do
    [[ "${t%%|*}" =~ $ONLY ]] && KEPT+=("$t")
  done
  TARGETS=("${KEPT[@]}")
fi
RESULTS="$TMP/results.tsv"
: > "$RESULTS"

# measure ROUND NAME PORT COOKIE PID SECONDS
measure() {
  local round=$1 name=$2 port=$3 cookie=$4 pid=$5 secs=$6
  local args=(-t1 "-c$CONNS" "-d${secs}s" -H "Host: bench.local" -s "$HERE/report.lua")
  [ -n "$cookie" ] && args+=(-H "Cookie: $cookie")
  local t0 t1 out
  t0=$(cpu_ns "$pid")
  local scheme=http
  [[ "$name" == *-https || "$name" == *-h2 ]] && scheme=https
  if [[ "$name" == *-h2c || "$name" == *-h2 ]] || [ -n "${RATE:-}" ]; then
    # h2load: per-request durations go to a log that h2report.py reads
    local h2args=(-t1 "-c$CONNS" -D "$secs" -H ':authority: bench.local' --log-file="$TMP/h2.log")
    if [[ "$name" == *-h2c || "$name" == *-h2 ]]; then
      h2args+=("-m${STREAMS:-10}")
    else
      h2args+=(--h1)
    fi
    [ -n "${RATE:-}" ] && h2args+=("--rps=$((RATE / CONNS))")
    [ -n "$cookie" ] && h2args+=(-H "cookie: $cookie")
    rm -f "$TMP/h2.log"
    taskset -c "$CLIENT_CPU" h2load "${h2args[@]}" "$scheme://127.0.0.1:$port/" > "$TMP/h2.out" 2>&1 || true
    out=$(python3 "$HERE/h2report.py" "$TMP/h2.out" "$TMP/h2.log" | grep '^RESULT' || true)
  else
    local body=""
    [[ "$name" == *-post ]] && body="${BODY_BYTES:-1024}"
    out=$(BODY_BYTES="$body" taskset -c "$CLIENT_CPU" wrk "${args[@]}" "$scheme://127.0.0.1:$port/" | grep '^RESULT' || true)
  fi
  t1=$(cpu_ns "$pid")
  [ -n "$out" ] || { echo "wrk printed no result for $name" >&2; exit 1; }
  [ "$round" = warmup ] && return
  local cpu
  cpu=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", (b - a) / 1000}')
  echo -e "$round\t$name\t$out cpu_us=$cpu" >> "$RESULTS"
  echo "   round $round  $(printf '%-17s' "$name") $out cpu_us=$cpu" >&2
}

log "warm-up: ${WARMUP}s per target"
for t in "${TARGETS[@]}"; do
  IFS='|' read -r name port cookie pid <<< "$t"
  measure warmup "$name" "$port" "$cookie" "$pid" "$WARMUP"
done

log "measuring: $ROUNDS rounds x ${#TARGETS[@]} targets x ${DURATION}s, $CONNS connections, wrk on core $CLIENT_CPU, proxies on core $PROXY_CPU, upstream on core $UPSTREAM_CPU"
for round in $(seq 1 "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    IFS='|' read -r name port cookie pid <<< "$t"
    measure "$round" "$name" "$port" "$cookie" "$pid" "$DURATION"
  done
done

for p in "${PIDS[@]}"; do
  kill -0 "$p" 2>/dev/null || { echo "a server died during the run (pid $p); logs in $TMP" >&2; KEEP_TMP=1; exit 1; }
done
log "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ " ${TARGETS[*]} " == *" slotproxy-shadow|"* ]]; then
  shadow=$(curl -s -H 'Authorization: Bearer bench-token' \
    "http://127.0.0.1:$SHADOW_ADMIN_PORT/api/v1/sites/bench/slots/staging/shadow" |
    python3 -c 'import json,sys; f=json.load(sys.stdin)["figures"]; print(", ".join(f"{k} {v}" for k, v in f.items()))')
  log "slotproxy-shadow's copies over the whole run: $shadow"
fi
python3 "$HERE/summarize.py" "$RESULTS" "$DURATION" "$ROUNDS" "$CONNS"
