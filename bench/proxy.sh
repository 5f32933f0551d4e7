#!/usr/bin/env bash
# Measures `podkit proxy` against nginx's proxy_pass and against the backend itself, in one run
# on this machine, and prints a table with the ratio podkit/nginx.
#
#   bench/proxy.sh                  # builds podkit-proxy (release) unless PODKIT_PROXY=/path
#   DURATION=10 ROUNDS=5 bench/proxy.sh
#
# Parts, all on 127.0.0.1 (ports from BASE_PORT, default 10000 + PID % 2000 * 10):
# - backend: nginx, WORKERS worker(s), `return 200` of a 13-byte body, HTTP/1.1 and h2c ports;
# - nginx: nginx proxy_pass to the backend with an upstream `keepalive` pool, the same forwarded
#   headers podkit sets (X-Forwarded-For/-Proto/-Host, Forwarded), combined access log to a file;
# - podkit: podkit-proxy --workers WORKERS --upstream http://backend, combined access log to a
#   file (its default; stdout redirected), the same ECDSA P-256 certificate as nginx for TLS,
#   and the same TLS 1.3 choice: X25519, TLS_AES_128_GCM_SHA256 by the server's preference
#   (podkit's default; nginx configured so), 2 session tickets sent per handshake by each.
# CPU split (2 cores; taskset): the proxy under test (podkit or nginx, WORKERS threads/processes)
# alone on PROXY_CPUS (default 1); the backend and the load generator share LOAD_CPUS (default
# 0), the same in every mode, so the two proxies get exactly the same CPU and the same load.
# Load: wrk -t1 -c CONNECTIONS (HTTP/1.1 keep-alive), h2load -c CONNECTIONS -m STREAMS (h2c
# prior knowledge), and TLS handshakes/s as wrk over https with `Connection: close` (a full
# handshake per request: wrk resumes no sessions). Besides req/s and latency, each run records the
# proxy's CPU time per request (/proc/PID/stat), which a busy machine does not skew as it skews
# req/s, and its peak RSS (VmHWM, reset before each load).
# Modes alternate within each round and the table shows medians, so load from other processes
# that comes and goes hits every mode alike. Everything started is stopped by pid on exit.
# Debian packages: nginx (or nginx-light: needs http_v2 and ssl), wrk, nghttp2-client (h2load),
# openssl, python3; installed with apt-get when missing (as root).
set -euo pipefail

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
STREAMS=${STREAMS:-10}
WORKERS=${WORKERS:-1}
PROXY_CPUS=${PROXY_CPUS:-1}
LOAD_CPUS=${LOAD_CPUS:-0}
# Below the ephemeral range (32768-60999), where a client socket may hold a port.
BASE_PORT=${BASE_PORT:-$((10000 + $$ % 2000 * 10))}
WORK=$(mktemp -d /tmp/proxybench.XXXXXX)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

missing=()
for tool in nginx wrk h2load openssl python3 taskset; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench/proxy.sh: missing ${missing[*]}; installing nginx wrk nghttp2-client openssl" >&2
    apt-get install -y nginx wrk nghttp2-client openssl >&2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${PODKIT_PROXY:-}" ]; then
    cargo build --quiet --release -p sidecars --bin podkit-proxy --manifest-path "$root/Cargo.toml"
    PODKIT_PROXY=${CARGO_TARGET_DIR:-$root/target}/release/podkit-proxy
fi

P_BACKEND=$BASE_PORT P_BACKEND_H2=$((BASE_PORT + 1))
P_NGINX=$((BASE_PORT + 10)) P_NGINX_H2=$((BASE_PORT + 11)) P_NGINX_TLS=$((BASE_PORT + 12))
P_PODKIT=$((BASE_PORT + 20)) P_PODKIT_TLS=$((BASE_PORT + 21))

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

nginx_conf() { # NAME SERVER_BLOCKS
    mkdir -p "$WORK/$1"
    cat >"$WORK/$1/nginx.conf" <<NGINX
worker_processes $WORKERS;
daemon off;
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http {
    client_body_temp_path $WORK/$1/body;
    proxy_temp_path $WORK/$1/proxy;
    fastcgi_temp_path $WORK/$1/fastcgi;
    uwsgi_temp_path $WORK/$1/uwsgi;
    scgi_temp_path $WORK/$1/scgi;
    keepalive_requests 1000000;
$2
}
NGINX
}

nginx_conf backend "
    access_log off;
    server {
        listen 127.0.0.1:$P_BACKEND backlog=4096;
        listen 127.0.0.1:$P_BACKEND_H2 http2 backlog=4096;
        location / { return 200 \"hello, world\n\"; }
    }"

nginx_conf nginx "
    access_log $WORK/nginx/access.log combined;
    upstream backend {
        server 127.0.0.1:$P_BACKEND;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$P_NGINX backlog=4096;
        listen 127.0.0.1:$P_NGINX_H2 http2 backlog=4096;
        listen 127.0.0.1:$P_NGINX_TLS ssl http2 backlog=4096;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        # Like podkit: TLS 1.3 (nginx 1.22, Debian 12's, offers at most TLS 1.2 unless told;
        # nginx 1.23.4 and later enable 1.3 by default), and the server's order with
        # AES-128-GCM first (wrk's OpenSSL lists AES-256-GCM first).
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_prefer_server_ciphers on;
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header Forwarded \"for=\$remote_addr;proto=\$scheme;host=\\\"\$host\\\"\";
        }
    }"

# nginx workers inherit the taskset of their master.
taskset -c "$LOAD_CPUS" nginx -c "$WORK/backend/nginx.conf" -e "$WORK/backend/error.log" &
PIDS+=($!)
taskset -c "$PROXY_CPUS" nginx -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
PIDS+=($!)
taskset -c "$PROXY_CPUS" "$PODKIT_PROXY" --workers "$WORKERS" \
    --listen "127.0.0.1:$P_PODKIT" --listen-tls "127.0.0.1:$P_PODKIT_TLS" \
    --cert "$WORK/cert.pem" --key "$WORK/key.pem" \
    --upstream "http://127.0.0.1:$P_BACKEND" >"$WORK/podkit.access" 2>"$WORK/podkit.err" &
PODKIT_PID=$!
PIDS+=("$PODKIT_PID")

wait_port() {
    for _ in $(seq 100); do
        bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench/proxy.sh: port $1 never opened (see $WORK)" >&2
    cat "$WORK"/*/error.log "$WORK/podkit.err" >&2 || true
    exit 1
}
for port in $P_BACKEND $P_BACKEND_H2 $P_NGINX $P_NGINX_H2 $P_NGINX_TLS $P_PODKIT $P_PODKIT_TLS; do
    wait_port "$port"
done
for url in "http://127.0.0.1:$P_NGINX/" "http://127.0.0.1:$P_PODKIT/"; do
    body=$(curl -sS "$url")
    [ "$body" = "hello, world" ] || { echo "bench/proxy.sh: $url answered '$body'" >&2; exit 1; }
done

load() { taskset -c "$LOAD_CPUS" "$@"; }
h1_port() { case $1 in direct) echo "$P_BACKEND" ;; nginx) echo "$P_NGINX" ;; podkit) echo "$P_PODKIT" ;; esac; }
h2_port() { case $1 in direct) echo "$P_BACKEND_H2" ;; nginx) echo "$P_NGINX_H2" ;; podkit) echo "$P_PODKIT" ;; esac; }
tls_port() { case $1 in nginx) echo "$P_NGINX_TLS" ;; podkit) echo "$P_PODKIT_TLS" ;; esac; }

NGINX_WORKER=$(pgrep -P "${PIDS[1]}" | head -1)
proxy_pid() { case $1 in direct) pgrep -P "${PIDS[0]}" | head -1 ;; nginx) echo "$NGINX_WORKER" ;; podkit) echo "$PODKIT_PID" ;; esac; }
# CPU time (user + system, in clock ticks) a process used so far.
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks=$(getconf CLK_TCK)
# Peak RSS per load: VmHWM, reset before each run (clear_refs 5, see proc(5)).
peak_reset() { echo 5 >"/proc/$1/clear_refs"; }
peak() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
# Microseconds of CPU per request: robust to a busy machine, where req/s are not.
per_request() { python3 -c "import sys; print(round(($2 - $1) * 1e6 / $ticks / max($3, 1), 1))"; }

echo "bench/proxy.sh: load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
    for mode in direct nginx podkit; do
        echo "round $round/$ROUNDS: $mode ..." >&2
        pid=$(proxy_pid $mode)
        c0=$(cpu "$pid")
        peak_reset "$pid"
        out=$(load wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$(h1_port $mode)/")
        c1=$(cpu "$pid")
        h1rss=$(peak "$pid")
        peak_reset "$pid"
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
        h1cpu=$(per_request "$c0" "$c1" "$(awk '/requests in/ {print $1}' <<<"$out")")
        tls=- tlscpu=- tlsrss=- c2=$c1
        if [ $mode != direct ]; then
            out=$(load wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -H 'Connection: close' "https://127.0.0.1:$(tls_port $mode)/")
            c2=$(cpu "$pid")
            tlsrss=$(peak "$pid")
            peak_reset "$pid"
            tls=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
            tlscpu=$(per_request "$c1" "$c2" "$(awk '/requests in/ {print $1}' <<<"$out")")
        fi
        out=$(load h2load -c"$CONNECTIONS" -m"$STREAMS" -D"$DURATION" "http://127.0.0.1:$(h2_port $mode)/")
        c3=$(cpu "$pid")
        h2rss=$(peak "$pid")
        h2rps=$(awk '/^finished in/ {print $4}' <<<"$out")
        h2mean=$(awk '/^time for request:/ {print $6}' <<<"$out")
        h2cpu=$(per_request "$c2" "$c3" "$(awk '/^requests:/ {print $8}' <<<"$out")")
        echo "$mode $rps $p99 $h1cpu $h2rps $h2mean $h2cpu $tls $tlscpu $h1rss $tlsrss $h2rss" >>"$WORK/results"
    done
done
echo "bench/proxy.sh: load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$WORK/results" "$DURATION" "$CONNECTIONS" "$STREAMS" "$ROUNDS" "$WORKERS" \
    "$PROXY_CPUS" "$LOAD_CPUS" <<'PY'
import statistics, sys
results, duration, conns, streams, rounds, workers, pcpu, lcpu = sys.argv[1:]
def ms(text):
    for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)
runs = {}
rss = {}
for line in open(results):
    mode, rps, p99, h1cpu, h2rps, h2mean, h2cpu, tls, tlscpu, *peaks = line.split()
    for name, kib in zip(("HTTP/1.1", "TLS", "h2c"), peaks):
        if kib != "-":
            rss.setdefault(mode, {}).setdefault(name, []).append(int(kib) / 1024)
    num = lambda t: float(t) if t != "-" else 0.0
    runs.setdefault(mode, []).append(
        (float(rps), ms(p99), num(h1cpu), float(h2rps), ms(h2mean), num(h2cpu), num(tls), num(tlscpu)))
med = {m: [statistics.median(col) for col in zip(*rows)] for m, rows in runs.items()}
print(f"proxy bench: median of {rounds} rounds, {duration}s each; proxy on CPU {pcpu} "
      f"({workers} worker), backend nginx + load generator on CPU {lcpu}")
print(f"HTTP/1.1: wrk -t1 -c{conns} keep-alive; h2c: h2load -c{conns} -m{streams}; "
      f"TLS: wrk -t1 -c{conns} -H 'Connection: close' (ECDSA P-256, a full handshake each); "
      f"CPU us: the proxy's (or backend's) user + system CPU per request")
print()
head = ("HTTP/1.1 req/s", "p99 ms", "CPU us", "h2c req/s", "mean ms", "CPU us",
        "TLS handshakes/s", "CPU us")
print("| " + " | ".join([f"{'':14}"] + [f"{h:>{max(len(h), 7)}}" for h in head]) + " |")
print("|" + "|".join(["-" * 16] + ["-" * (max(len(h), 7) + 2) for h in head]) + "|")
fmts = (".0f", ".2f", ".1f", ".0f", ".2f", ".1f", ".0f", ".1f")
for mode in ("direct", "nginx", "podkit"):
    m = med[mode]
    cells = [f"{v:{f}}" if not (mode == "direct" and i >= 6) else "-" for i, (v, f) in enumerate(zip(m, fmts))]
    print("| " + " | ".join([f"{mode:14}"] + [f"{c:>{max(len(h), 7)}}" for c, h in zip(cells, head)]) + " |")
p, n = med["podkit"], med["nginx"]
ratios = [f"{a / b:.2f}x" if b else "-" for a, b in zip(p, n)]
print("| " + " | ".join([f"{'podkit / nginx':14}"] + [f"{c:>{max(len(h), 7)}}" for c, h in zip(ratios, head)]) + " |")
print()
# wrk's TLS 1.3 client work (about 0.4 ms of CPU 0 per connection) bounds the handshake rate
# long before either proxy's core is busy, so the rate follows the machine's load; what the
# proxy itself can do is its CPU per handshake.
print("TLS handshakes per second of the proxy's CPU (1e6 / CPU us): "
      + ", ".join(f"{m} {1e6 / med[m][7]:.0f}" for m in ("nginx", "podkit") if med[m][7]))
print()
print("peak RSS (VmHWM, MiB) under each load of the first round, in this order (memory a load")
print("freed stays mapped, so each figure includes what the loads before it left):")
for mode, label in (("podkit", "podkit"), ("nginx", "nginx worker")):
    print(f"  {label:13} " + ", ".join(f"{name} {v[0]:.1f}" for name, v in rss[mode].items()))
print("targets: req/s >= 1.3x nginx with p99 <= nginx; TLS handshakes/s >= nginx; RSS <= 20 MiB")
PY
