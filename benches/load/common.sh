# Shared by run.sh and memory.sh: installs, builds, starts and stops the
# servers of the load benchmark. Sourced, not run.
#
# Every process started here is recorded in PIDS and killed on exit; every
# config, log and state dir lives under one mktemp dir (removed on exit unless
# KEEP_TMP=1). All traffic stays on 127.0.0.1.

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$REPO/benches/load"
TMP="$(mktemp -d /tmp/slotproxy-bench.XXXXXX)"
PIDS=()

# Cores: the proxy under test gets core 1 to itself; wrk and the upstream
# share core 0. Overridable for machines with more cores.
# WORKERS=2 gives every proxy two workers (slotproxy `threads`, nginx
# `worker_processes`, HAProxy `nbthread`, pingora's threads) on cores 0 and 1
# — which wrk and the upstream share: a scaling figure, not a per-core one.
WORKERS="${WORKERS:-1}"
if [ "$WORKERS" -gt 1 ]; then
  PROXY_CPU="${PROXY_CPU:-0-$((WORKERS - 1))}"
else
  PROXY_CPU="${PROXY_CPU:-1}"
fi
CLIENT_CPU="${CLIENT_CPU:-0}"
UPSTREAM_CPU="${UPSTREAM_CPU:-0}"

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "${KEEP_TMP:-0}" = 1 ]; then
    echo "kept $TMP" >&2
  else
    rm -rf "$TMP"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "== $*" >&2; }

# mimalloc's options: slotproxy, bare pingora and the floors each set their
# own (src/allocator.rs: they re-execute themselves with them and run its
# collector), so a BEFORE_SLOTPROXY binary runs with the options it shipped
# with and the comparison with bare pingora is of the code. A MIMALLOC_*
# variable exported here wins over them all.


install_missing() {
  local missing=()
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  export PATH="$PATH:/usr/sbin"
}

build() {
  if [ "${SKIP_BUILD:-0}" = 1 ]; then
    log "SKIP_BUILD=1: using the existing target/release binaries"
  else
    log "cargo build --release (slotproxy and examples/bare_pingora)"
    local examples=(--example bare_pingora)
    [ "${FLOORS:-0}" = 1 ] && examples+=(--example floors)
    (cd "$REPO" && cargo build --release --bin slotproxy "${examples[@]}")
  fi
  SLOTPROXY="${SLOTPROXY_BIN:-$REPO/target/release/slotproxy}"
  BARE="$REPO/target/release/examples/bare_pingora"
  [ -x "$SLOTPROXY" ] && [ -x "$BARE" ] || { echo "release binaries missing" >&2; exit 1; }
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_http PORT [EXTRA CURL ARGS...]: poll until the port answers 200.
wait_http() {
  local port=$1; shift
  local deadline=$((SECONDS + 30))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: bench.local' "$@" "http://127.0.0.1:$port/" 2>/dev/null)" = 200 ]; do
    if [ $SECONDS -ge $deadline ]; then
      echo "nothing answers 200 on 127.0.0.1:$port; logs in $TMP:" >&2
      tail -n 20 "$TMP"/*.log >&2 || true
      exit 1
    fi
    sleep 0.1
  done
}

# The upstream every target ends at: nginx answering a fixed 20-byte body
# from memory (no disk, no logging). On /sanity it echoes the X-Slot-Name it
# received so the sanity check can prove each proxy routed the request.
# wait_https PORT: as wait_http, over TLS (the test certificate, not checked).
wait_https() {
  local port=$1
  local deadline=$((SECONDS + 30))
  until [ "$(curl -sk -o /dev/null -w '%{http_code}' -H 'Host: bench.local' "https://127.0.0.1:$port/" 2>/dev/null)" = 200 ]; do
    if [ $SECONDS -ge $deadline ]; then
      echo "nothing answers 200 over TLS on 127.0.0.1:$port; logs in $TMP:" >&2
      tail -n 20 "$TMP"/*.log >&2 || true
      exit 1
    fi
    sleep 0.1
  done
}

# The TLS certificate every proxy serves (the tests' self-signed one).
TLS_CERT="$REPO/tests/fixtures/tls-cert.pem"
TLS_KEY="$REPO/tests/fixtures/tls-key.pem"

start_upstream() {
  UPSTREAM_PORT=$(free_port)
  SHADOW_UPSTREAM_PORT=$(free_port)
  cat > "$TMP/upstream.conf" <<CONF
worker_processes 1;
pid $TMP/upstream.pid;
error_log $TMP/upstream.log warn;
events { worker_connections $(( $(ulimit -Hn) - 100 )); }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT reuseport;
        location / {
            return 200 "hello from upstream\n";
        }
        # only sanity.py asks here, so every measured response is the same
        location /sanity {
            add_header X-Seen-Slot \$http_x_slot_name;
            return 200 "hello from upstream\n";
        }
    }
    # the second slot's app of the slotproxy-shadow target: the same answer
    # on its own port (the copies' own connections land here)
    server {
        listen 127.0.0.1:$SHADOW_UPSTREAM_PORT reuseport;
        location / {
            return 200 "hello from upstream\n";
        }
        location /sanity {
            add_header X-Seen-Slot \$http_x_slot_name;
            return 200 "hello from upstream\n";
        }
    }
}
CONF
  taskset -c "$UPSTREAM_CPU" nginx -e "$TMP/upstream.log" -p "$TMP" -c "$TMP/upstream.conf" -g 'daemon off;' &
  PIDS+=($!)
  wait_http "$UPSTREAM_PORT"
}

# slotproxy: 90/10 split between production and staging, cookie pinning,
# one worker thread, health checks as default.
# start_slotproxy [NAME [BINARY]]: NAME keeps the files of two instances apart.
# SLOTPROXY_SERVER_EXTRA: more [server] lines (e.g. "drain_secs = 3").
# STAGING_UPSTREAM_PORT: staging's own app server (default: UPSTREAM_PORT).
# Sets SLOTPROXY_PORT, SLOTPROXY_ADMIN_PORT, SLOTPROXY_METRICS_PORT, SLOTPROXY_PID.
start_slotproxy() {
  local name="${1:-slotproxy}" bin="${2:-$SLOTPROXY}"
  SLOTPROXY_PORT=$(free_port)
  SLOTPROXY_ADMIN_PORT=$(free_port)
  SLOTPROXY_METRICS_PORT=$(free_port)
  SLOTPROXY_TLS_PORT=$(free_port)
  mkdir -p "$TMP/$name-state"
  cat > "$TMP/$name.toml" <<CONF
[server]
listen = ["127.0.0.1:$SLOTPROXY_PORT"]
tls_listen = ["127.0.0.1:$SLOTPROXY_TLS_PORT"]
tls_cert_path = "$TLS_CERT"
tls_key_path = "$TLS_KEY"
threads = $WORKERS
upgrade_sock = "$TMP/$name-upgrade.sock"
pid_file = "$TMP/$name.pid"
${SLOTPROXY_SERVER_EXTRA:-}

[admin]
listen = "127.0.0.1:$SLOTPROXY_ADMIN_PORT"
token = "bench-token"

[metrics]
listen = "127.0.0.1:$SLOTPROXY_METRICS_PORT"

[state]
dir = "$TMP/$name-state"

[[sites]]
name = "bench"
hostnames = ["bench.local"]

[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["127.0.0.1:$UPSTREAM_PORT"]

[[sites.slots]]
name = "staging"
traffic_percent = 10
build_version = "v2"
instances = ["127.0.0.1:${STAGING_UPSTREAM_PORT:-$UPSTREAM_PORT}"]
${SLOTPROXY_STAGING_EXTRA:-}
CONF
  taskset -c "$PROXY_CPU" "$bin" serve --config "$TMP/$name.toml" > "$TMP/$name.log" 2>&1 &
  SLOTPROXY_PID=$!
  PIDS+=($SLOTPROXY_PID)
  wait_http "$SLOTPROXY_PORT"
  wait_https "$SLOTPROXY_TLS_PORT"
}

# pingora with a fixed upstream and no slot logic, same pingora settings.
# start_bare [NAME [BINARY]]
start_bare() {
  local name="${1:-bare}" bin="${2:-$BARE}"
  BARE_PORT=$(free_port)
  taskset -c "$PROXY_CPU" "$bin" "127.0.0.1:$BARE_PORT" "127.0.0.1:$UPSTREAM_PORT" "$WORKERS" > "$TMP/$name.log" 2>&1 &
  BARE_PID=$!
  PIDS+=($BARE_PID)
  wait_http "$BARE_PORT"
}

# nginx doing slotproxy's job: split_clients for the 90/10 pick, a map on the
# routing cookie for pins, Set-Cookie only when not pinned, keepalive
# upstreams, the same forwarded headers.
start_nginx() {
  NGINX_PORT=$(free_port)
  # the same server over HTTP/2 without TLS (h2c, prior knowledge)
  NGINX_H2_PORT=$(free_port)
  NGINX_TLS_PORT=$(free_port)
  cat > "$TMP/nginx.conf" <<CONF
worker_processes $WORKERS;
pid $TMP/nginx.pid;
error_log $TMP/nginx.log warn;
events { worker_connections $(( $(ulimit -Hn) - 100 )); }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;

    # nginx's \$cookie_ variables cannot name a cookie with dashes
    map \$http_cookie \$pin {
        "~(?:^|;)\\s*x-ms-routing-name=self(?:;|\$)"    self;
        "~(?:^|;)\\s*x-ms-routing-name=staging(?:;|\$)" staging;
        default "";
    }
    split_clients "\${request_id}" \$split {
        10%  staging;
        *    self;
    }
    map \$pin \$route {
        ""      \$split;
        default \$pin;
    }
    map \$pin \$set_pin {
        ""      "x-ms-routing-name=\$route; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax";
        default "";
    }
    map \$route \$slot_name {
        self    production;
        default \$route;
    }
    upstream self {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 128;
        keepalive_requests 100000000;
    }
    upstream staging {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 128;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT reuseport;
        listen 127.0.0.1:$NGINX_H2_PORT http2;
        # TLS with ALPN h2 and http/1.1, the same certificate as slotproxy's
        listen 127.0.0.1:$NGINX_TLS_PORT ssl http2;
        ssl_certificate $TLS_CERT;
        ssl_certificate_key $TLS_KEY;
        location / {
            proxy_pass http://\$route;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Slot-Name \$slot_name;
            add_header Set-Cookie \$set_pin;
        }
    }
}
CONF
  taskset -c "$PROXY_CPU" nginx -e "$TMP/nginx.log" -p "$TMP" -c "$TMP/nginx.conf" -g 'daemon off;' &
  NGINX_PID=$!
  PIDS+=($NGINX_PID)
  wait_http "$NGINX_PORT"
  wait_https "$NGINX_TLS_PORT"
}

# HAProxy doing the same job: weighted random backends, an inserted cookie
# that is honoured when valid (indirect: no Set-Cookie for pinned clients).
start_haproxy() {
  HAPROXY_PORT=$(free_port)
  HAPROXY_TLS_PORT=$(free_port)
  HAPROXY_H2C_PORT=$(free_port)
  # HAProxy takes the certificate and its key in one file
  cat "$TLS_CERT" "$TLS_KEY" > "$TMP/haproxy.pem"
  HAPROXY_MAXCONN=$(( ($(ulimit -n) - 100) / 2 ))
  cat > "$TMP/haproxy.cfg" <<CONF
global
    nbthread $WORKERS
    # HAProxy reserves two fds per connection
    maxconn $HAPROXY_MAXCONN
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    # TLS with ALPN h2 and http/1.1; h2c with prior knowledge
    bind 127.0.0.1:$HAPROXY_TLS_PORT ssl crt $TMP/haproxy.pem alpn h2,http/1.1
    bind 127.0.0.1:$HAPROXY_H2C_PORT proto h2
    http-request del-header X-Forwarded-For
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    option forwardfor
    default_backend slots
backend slots
    balance random
    http-reuse always
    cookie x-ms-routing-name insert indirect httponly attr "Max-Age=3600" attr "SameSite=Lax"
    http-send-name-header X-Slot-Name
    server production 127.0.0.1:$UPSTREAM_PORT weight 90 cookie self
    server staging 127.0.0.1:$UPSTREAM_PORT weight 10 cookie staging
CONF
  taskset -c "$PROXY_CPU" haproxy -db -f "$TMP/haproxy.cfg" > "$TMP/haproxy.log" 2>&1 &
  HAPROXY_PID=$!
  PIDS+=($HAPROXY_PID)
  wait_http "$HAPROXY_PORT"
  wait_https "$HAPROXY_TLS_PORT"
}

# The floors (FLOORS=1 in run.sh): what pingora's layers do on their own,
# on the proxy's core like every proxy.
# nginx answering from memory, as the upstream does (the peer of floor-memory).
start_nginx_memory() {
  NGINX_MEMORY_PORT=$(free_port)
  sed -e "s/127.0.0.1:$UPSTREAM_PORT /127.0.0.1:$NGINX_MEMORY_PORT /" \
      -e "s/worker_processes 1;/worker_processes $WORKERS;/" \
      -e "s#$TMP/upstream.pid#$TMP/nginx-memory.pid#" \
      -e "s#$TMP/upstream.log#$TMP/nginx-memory.log#" "$TMP/upstream.conf" > "$TMP/nginx-memory.conf"
  taskset -c "$PROXY_CPU" nginx -e "$TMP/nginx-memory.log" -p "$TMP" -c "$TMP/nginx-memory.conf" -g 'daemon off;' &
  NGINX_MEMORY_PID=$!
  PIDS+=($NGINX_MEMORY_PID)
  wait_http "$NGINX_MEMORY_PORT"
}

# start_floor MODE: examples/floors.rs in MODE (memory | forward | h2c-memory); sets
# FLOOR_PORT and FLOOR_PID.
start_floor() {
  local mode=$1 bin="${FLOORS_BIN:-$REPO/target/release/examples/floors}"
  FLOOR_PORT=$(free_port)
  local args=("$mode" "127.0.0.1:$FLOOR_PORT")
  [ "$mode" = forward ] && args+=("127.0.0.1:$UPSTREAM_PORT")
  taskset -c "$PROXY_CPU" "$bin" "${args[@]}" "$WORKERS" > "$TMP/floor-$mode.log" 2>&1 &
  FLOOR_PID=$!
  PIDS+=($FLOOR_PID)
  if [ "$mode" = h2c-memory ]; then
    wait_http "$FLOOR_PORT" --http2-prior-knowledge
  else
    wait_http "$FLOOR_PORT"
  fi
}

# rss_kb PID: resident set size of a process, in KiB.
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# cpu_ns PID...: nanoseconds on CPU of the processes, their threads and their
# children (nginx's worker). CPU per request stays meaningful when other work
# on a shared machine steals cycles and so lowers every req/s figure.
cpu_ns() {
  local pid
  for pid in "$@" $(for p in "$@"; do pgrep -P "$p" || true; done); do
    cat /proc/"$pid"/task/*/schedstat 2>/dev/null || true
  done | awk '{t += $1} END {printf "%.0f\n", t}'
}
