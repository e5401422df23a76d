#!/usr/bin/env bash
# Where slotproxy's CPU goes under the load benchmark's load:
#   benches/load/profile.sh [BINARY...]
#
# For each binary (default: target/release/slotproxy), starts the benchmark's
# upstream and that slotproxy (one worker, pinned as in run.sh), drives it
# with wrk (cookieless, CONNS connections) for DURATION seconds under
# `perf record -e cpu-clock` (this VM has no hardware counters), and prints
# the top SYMBOLS symbols by self time, then the share of kernel, allocator,
# pingora-proxy, pingora-core, tokio and slotproxy frames.
# Settings (env): DURATION=5, CONNS=50, SYMBOLS=25, SLOTPROXY_SERVER_EXTRA as
# in common.sh (e.g. "lean_http1 = false").
source "$(dirname "$0")/common.sh"

DURATION="${DURATION:-5}"
CONNS="${CONNS:-50}"
SYMBOLS="${SYMBOLS:-25}"
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=("$REPO/target/release/slotproxy")
command -v perf >/dev/null 2>&1 || { echo "perf is missing (apt-get install linux-perf)" >&2; exit 1; }

install_missing
ulimit -n "$(ulimit -Hn)"
log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
start_upstream
i=0
for bin in "${BINS[@]}"; do
  i=$((i + 1))
  start_slotproxy "profiled-$i" "$bin"
  log "$bin: wrk ${DURATION}s under perf"
  perf record -q -e cpu-clock -F 2000 -g -p "$SLOTPROXY_PID" -o "$TMP/perf-$i.data" -- sleep "$DURATION" 2>/dev/null &
  perf_pid=$!
  taskset -c "$CLIENT_CPU" wrk -t1 "-c$CONNS" "-d${DURATION}s" -H "Host: bench.local" "http://127.0.0.1:$SLOTPROXY_PORT/" | grep -E 'Requests/sec|Latency'
  wait "$perf_pid" || true
  echo "--- top $SYMBOLS symbols (self time) of $bin"
  perf report -i "$TMP/perf-$i.data" --no-children --sort symbol --stdio 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | head -n "$SYMBOLS" || true
  echo "--- by part (self time)"
  { perf report -i "$TMP/perf-$i.data" --no-children --sort dso,symbol --stdio 2>/dev/null || true; } \
    | grep -E '^ +[0-9.]+%' | python3 -c '
import re, sys
parts = {"kernel": 0.0, "allocator (mimalloc)": 0.0, "pingora-proxy": 0.0, "pingora-core/http/error": 0.0,
         "tokio": 0.0, "slotproxy": 0.0, "libc and other": 0.0}
for line in sys.stdin:
    m = re.match(r"\s+([0-9.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
    if not m:
        continue
    pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4)
    if kind == "k" or "kernel" in dso:
        parts["kernel"] += pct
    elif "mi_" in sym or "mimalloc" in sym or "_mi_" in sym:
        parts["allocator (mimalloc)"] += pct
    elif "pingora_proxy" in sym:
        parts["pingora-proxy"] += pct
    elif "pingora" in sym or "http::" in sym or "httparse" in sym or "bytes::" in sym:
        parts["pingora-core/http/error"] += pct
    elif "tokio" in sym:
        parts["tokio"] += pct
    elif "slotproxy" in sym:
        parts["slotproxy"] += pct
    else:
        parts["libc and other"] += pct
for k, v in parts.items():
    print(f"   {k:28s} {v:5.1f}%")
'
  kill "$SLOTPROXY_PID" 2>/dev/null || true
done
