#!/usr/bin/env bash
# The soak, one command: benches/load/soak.sh
#
# Release slotproxy (one worker, core PROXY_CPU) in front of two real app
# servers (nginx: production and staging), for DURATION seconds:
#
# * well-behaved clients (wrk, CONNS connections, core CLIENT_CPU) at RATE
#   requests/s — by default half of the saturation measured first (5 s of
#   wrk flat out) — a mix of cookieless GETs, pinned GETs and POSTs with a
#   body, paced by wrk's delay() (soak.lua);
# * a swap of staging and production every second (swap_loop.py);
# * a hostile mix alongside (hostile.py, from 127.0.0.2): IDLE idle
#   keep-alive connections, SLOW slowloris connections (a header never
#   finished), SHORT short bodies (Content-Length: 100, 2 bytes sent),
#   each reopened as soon as the proxy ends it.
#
# Every SAMPLE seconds: slotproxy's RSS (/proc/PID/status), its open file
# descriptors (/proc/PID/fd), its open client connections (metrics), the
# good clients' requests and errors (socket errors and non-2xx) and the
# swaps so far. Prints the table (every row to soak.tsv, a row every
# TABLE_EVERY seconds as markdown) and draws PLOT (a PNG, with Debian's
# python3-matplotlib, installed when missing).
#
# Settings (env): DURATION=1800, RATE (default: half of saturation),
# CONNS=50, SAMPLE=10, TABLE_EVERY=150, IDLE=2000, SLOW=200, SHORT=100,
# PLOT=docs/soak.png, SLOTPROXY_SERVER_EXTRA (more [server] lines, e.g.
# "keepalive_timeout_secs = 20"), SLOTPROXY_BIN (another binary),
# TSV_OUT (keep the samples there), SKIP_BUILD=1, KEEP_TMP=1.
source "$(dirname "$0")/common.sh"

DURATION="${DURATION:-1800}"
CONNS="${CONNS:-50}"
SAMPLE="${SAMPLE:-10}"
TABLE_EVERY="${TABLE_EVERY:-150}"
IDLE="${IDLE:-2000}"
SLOW="${SLOW:-200}"
SHORT="${SHORT:-100}"
PLOT="${PLOT:-$REPO/docs/soak.png}"

install_missing
if ! /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  log "installing: python3-matplotlib"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-matplotlib >/dev/null
fi
SLOTPROXY="${SLOTPROXY_BIN:-$REPO/target/release/slotproxy}"
if [ "${SKIP_BUILD:-0}" = 1 ]; then
  log "SKIP_BUILD=1: using $SLOTPROXY as it is"
else
  log "cargo build --release --bin slotproxy"
  (cd "$REPO" && cargo build --release --bin slotproxy)
fi
ulimit -n "$(ulimit -Hn)"

log "machine: $(nproc) cores, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
log "slotproxy $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- src Cargo.toml || echo '+dirty'), ulimit -n $(ulimit -n), temp dir $TMP"

# start_app NAME: an nginx app server answering 20 bytes; POST /upload is
# answered only once the whole body has arrived (nginx buffers a proxied
# request's body), as an app that reads its body would. Sets APP_PORT.
start_app() {
  local name=$1
  APP_PORT=$(free_port)
  cat > "$TMP/$name.conf" <<CONF
worker_processes 1;
pid $TMP/$name.pid;
error_log $TMP/$name.log warn;
events { worker_connections $(( $(ulimit -Hn) - 100 )); }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    # the proxy's body time-out, not the app's, must decide a short body
    client_body_timeout 600s;
    server {
        listen 127.0.0.1:$APP_PORT reuseport;
        location / {
            return 200 "hello from $name\n";
        }
        location = /upload {
            proxy_pass http://127.0.0.1:$APP_PORT/uploaded;
        }
        location = /uploaded {
            return 200 "stored by $name\n";
        }
    }
}
CONF
  taskset -c "$UPSTREAM_CPU" nginx -e "$TMP/$name.log" -p "$TMP" -c "$TMP/$name.conf" -g 'daemon off;' &
  PIDS+=($!)
  wait_http "$APP_PORT"
}

start_app production
PROD_PORT=$APP_PORT
start_app staging
STAGING_PORT=$APP_PORT

UPSTREAM_PORT=$PROD_PORT STAGING_UPSTREAM_PORT=$STAGING_PORT start_slotproxy
ADMIN_PORT=$SLOTPROXY_ADMIN_PORT METRICS_PORT=$SLOTPROXY_METRICS_PORT PID=$SLOTPROXY_PID

metric() { # metric NAME: the sum of a series over its labels
  curl -s "http://127.0.0.1:$METRICS_PORT/metrics" |
    awk -v n="$1" '$1 == n || index($1, n "{") == 1 {s += $2} END {printf "%d\n", s}'
}
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<< "$2"; }
# wrk SECONDS [DELAY_MS]: one RESULT line (soak.lua)
run_wrk() {
  SOAK_DELAY_MS="${2:-0}" taskset -c "$CLIENT_CPU" wrk -t1 "-c$CONNS" "-d${1}s" --timeout 10s \
    -s "$HERE/soak.lua" "http://127.0.0.1:$SLOTPROXY_PORT/" | grep '^RESULT'
}

if [ -z "${RATE:-}" ]; then
  run_wrk 2 > /dev/null
  sat=$(run_wrk 5)
  SATURATION=$(awk -v r="$(field requests "$sat")" -v s="$(field seconds "$sat")" 'BEGIN {printf "%d", r / s}')
  RATE=$((SATURATION / 2))
  log "saturation: $SATURATION req/s (5 s, $CONNS connections, flat out); soak rate: $RATE req/s"
else
  log "soak rate: $RATE req/s (RATE)"
fi
# each connection waits DELAY before each request: CONNS / DELAY = RATE
DELAY_MS=$(awk -v c="$CONNS" -v r="$RATE" 'BEGIN {d = c * 1000 / r; printf "%d", d < 1 ? 1 : d}')

log "soak: ${DURATION}s; hostile: $IDLE idle, $SLOW slowloris, $SHORT short bodies; a swap every second"
python3 "$HERE/hostile.py" "$SLOTPROXY_PORT" "$DURATION" "$IDLE" "$SLOW" "$SHORT" > "$TMP/hostile.log" 2>&1 &
HOSTILE_PID=$!
PIDS+=($HOSTILE_PID)
python3 "$HERE/swap_loop.py" "$ADMIN_PORT" 1 "$DURATION" > "$TMP/swaps.log" 2>&1 &
SWAPS_PID=$!
PIDS+=($SWAPS_PID)

TSV="$TMP/soak.tsv"
printf 't_s\trss_mib\tfds\tclient_conns\tgood_requests\tgood_errors\tswaps\n' > "$TSV"
sample() { # sample T REQUESTS ERRORS
  printf '%d\t%.1f\t%d\t%d\t%d\t%d\t%d\n' "$1" "$(awk -v k="$(rss_kb "$PID")" 'BEGIN {print k / 1024}')" \
    "$(find "/proc/$PID/fd" -mindepth 1 -maxdepth 1 | wc -l)" "$(metric slotproxy_connections_open)" \
    "$2" "$3" "$(metric slotproxy_swaps_total)" | tee -a "$TSV" >&2
}
sample 0 0 0
start=$SECONDS
while [ $((SECONDS - start)) -lt "$DURATION" ]; do
  left=$((DURATION - (SECONDS - start)))
  w=$(run_wrk $((left < SAMPLE ? left : SAMPLE)) "$DELAY_MS")
  sample $((SECONDS - start)) "$(field requests "$w")" $(($(field socket_errors "$w") + $(field non2xx "$w")))
  kill -0 "$PID" 2>/dev/null || { echo "slotproxy died; log:" >&2; tail -n 30 "$TMP/slotproxy.log" >&2; exit 1; }
done
wait "$SWAPS_PID" || true
wait "$HOSTILE_PID" || true
sleep 1

echo
echo "| time s | RSS MiB | fds | client connections | good requests | good-client errors | swaps |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
awk -F'\t' -v every="$TABLE_EVERY" 'NR == 1 {next}
  {req += $5; err += $6}
  $1 >= next_row || NR == 2 {printf "| %d | %.1f | %d | %d | %d | %d | %d |\n", $1, $2, $3, $4, req, err, $7; next_row += every; shown = NR}
  {last = $0; lreq = req; lerr = err; lnr = NR}
  END {if (shown != lnr) {split(last, f, "\t"); printf "| %d | %.1f | %d | %d | %d | %d | %d |\n", f[1], f[2], f[3], f[4], lreq, lerr, f[7]}}' "$TSV"
echo
awk -F'\t' 'NR > 1 {req += $5; err += $6; if ($2 > max) max = $2; if (NR == 2) first = $2; last = $2; if ($3 > fdmax) fdmax = $3}
  END {printf "good requests: %d, good-client errors: %d; RSS first/max/last: %.1f/%.1f/%.1f MiB; most fds: %d\n", req, err, first, max, last, fdmax}' "$TSV"
grep '^SWAPS' "$TMP/swaps.log" || { echo "swap loop:"; tail -n 5 "$TMP/swaps.log"; }
grep '^HOSTILE' "$TMP/hostile.log" | tail -n 1
echo "slotproxy counted: upstream errors $(metric slotproxy_upstream_errors_total), refused connections $(metric slotproxy_connections_refused_total)"
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^slotproxy_(requests_total|upstream_errors_total)\{' | awk '$2 > 0' | sed 's/^/  /'
cp "$TSV" "${TSV_OUT:-/dev/null}" 2>/dev/null || true

mkdir -p "$(dirname "$PLOT")"
/usr/bin/python3 "$HERE/soak_plot.py" "$TSV" "$PLOT" "$RATE" "$IDLE/$SLOW/$SHORT"
log "plot: $PLOT"
