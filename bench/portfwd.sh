#!/usr/bin/env bash
# Measures portfwd against a direct connection and against socat, in one run on this machine,
# and prints a table with ratios to direct.
#
#   sudo bench/portfwd.sh            # builds portfwd (release) unless PORTFWD=/path/to/portfwd
#   DURATION=10 ROUNDS=5 CONNECTIONS=100 sudo -E bench/portfwd.sh
#
# Setup: a network namespace "pfbench-PID" (lo up) runs iperf3 -s and nginx (1 worker,
# `return 200`). "direct" runs the client inside that namespace against its 127.0.0.1: the
# loopback speed a forward aims at. "portfwd" runs the client on the host through
# `portfwd --netns NS`. "socat" is the usual userspace bridge into a namespace: socat on the host
# (TCP-LISTEN,fork) to a unix socket, served by socat inside the namespace (UNIX-LISTEN,fork) that
# dials 127.0.0.1. Traffic stays on loopback. Needs root, iperf3, wrk, nginx (nginx-light), socat,
# python3, iproute2. Everything it starts is stopped by pid and the namespace deleted on exit.
set -euo pipefail

DURATION=${DURATION:-3}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-50}
NS=pfbench-$$
WORK=$(mktemp -d /tmp/pfbench.XXXXXX)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "bench/portfwd.sh: needs root (it creates a network namespace)" >&2; exit 1; }
for tool in iperf3 wrk nginx socat python3 ip; do
    command -v "$tool" >/dev/null || { echo "bench/portfwd.sh: needs $tool (apt-get install iperf3 wrk nginx-light socat python3 iproute2)" >&2; exit 1; }
done

if [ -z "${PORTFWD:-}" ]; then
    root=$(cd "$(dirname "$0")/.." && pwd)
    cargo build --quiet --release -p portfwd --manifest-path "$root/Cargo.toml"
    PORTFWD=${CARGO_TARGET_DIR:-$root/target}/release/portfwd
fi

ip netns add "$NS"
ip -n "$NS" link set lo up

# Servers inside the namespace.
ip netns exec "$NS" iperf3 -s -p 5201 >/dev/null 2>&1 &
PIDS+=($!)
cat >"$WORK/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
master_process off;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:8080 backlog=4096;
        location / { return 200 "hello from the pod\n"; }
    }
}
NGINX
ip netns exec "$NS" nginx -c "$WORK/nginx.conf" -e "$WORK/nginx.err" &
PIDS+=($!)

# The forwards under test.
"$PORTFWD" ${PORTFWD_ARGS:-} --quiet --netns "$NS" --address 127.0.0.1 15201:5201 18080:8080 >"$WORK/portfwd.out" 2>&1 &
PIDS+=($!)
for port in 5201 8080; do
    ip netns exec "$NS" socat "UNIX-LISTEN:$WORK/socat-$port.sock,fork" "TCP:127.0.0.1:$port" &
    PIDS+=($!)
done
socat TCP-LISTEN:25201,bind=127.0.0.1,fork,reuseaddr,backlog=4096 "UNIX-CONNECT:$WORK/socat-5201.sock" &
PIDS+=($!)
socat TCP-LISTEN:28080,bind=127.0.0.1,fork,reuseaddr,backlog=4096 "UNIX-CONNECT:$WORK/socat-8080.sock" &
PIDS+=($!)

wait_port() { # NETNS_OR_EMPTY PORT
    for _ in $(seq 100); do
        if [ -n "$1" ]; then ip netns exec "$1" bash -c "exec 3<>/dev/tcp/127.0.0.1/$2" 2>/dev/null && return 0
        else bash -c "exec 3<>/dev/tcp/127.0.0.1/$2" 2>/dev/null && return 0; fi
        sleep 0.1
    done
    echo "bench/portfwd.sh: port $2 never opened" >&2; exit 1
}
wait_port "$NS" 5201; wait_port "$NS" 8080
wait_port "" 15201; wait_port "" 18080; wait_port "" 25201; wait_port "" 28080

run() { # MODE COMMAND...: runs the client inside the namespace for "direct", else on the host
    if [ "$1" = direct ]; then shift; ip netns exec "$NS" "$@"; else shift; "$@"; fi
}
port_of() { # MODE BASE_PORT
    case $1 in direct) echo "$2" ;; portfwd) echo $((10000 + $2)) ;; socat) echo $((20000 + $2)) ;; esac
}

# Rounds alternate the modes, and the table shows each mode's median: on a shared machine, load
# that comes and goes then hits every mode alike.
: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
    for mode in direct portfwd socat; do
        echo "round $round/$ROUNDS: $mode ..." >&2
        p=$(port_of $mode 5201)
        gbps=$(run $mode iperf3 -c 127.0.0.1 -p "$p" -t "$DURATION" -J |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)')
        p=$(port_of $mode 8080)
        cps=$(run $mode wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -H 'Connection: close' "http://127.0.0.1:$p/" |
            awk '/Requests\/sec/ {print $2}')
        out=$(run $mode wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$p/")
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
        echo "$mode $gbps $cps $rps $p99" >>"$WORK/results"
    done
done

python3 - "$WORK/results" "$DURATION" "$CONNECTIONS" "$ROUNDS" <<'PY'
import os, statistics, sys
def ms(text):
    for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)
runs = {}
for line in open(sys.argv[1]):
    mode, gbps, cps, rps, p99 = line.split()
    runs.setdefault(mode, []).append((float(gbps), float(cps), float(rps), ms(p99)))
med = {m: [statistics.median(col) for col in zip(*rows)] for m, rows in runs.items()}
d = med["direct"]
print(f"portfwd bench: median of {sys.argv[4]} rounds, {sys.argv[2]}s per run, "
      f"wrk -t1 -c{sys.argv[3]}, nproc={os.cpu_count()}")
print(f"{'':8} {'iperf3 Gbit/s':>16} {'conn/s (close)':>18} {'req/s (keep-alive)':>22} {'p99 ms':>14}")
for mode in ("direct", "portfwd", "socat"):
    m = med[mode]
    cells = []
    for i, fmt in enumerate((".2f", ".0f", ".0f", ".2f")):
        cells.append(f"{m[i]:{fmt}}" if mode == "direct" else f"{m[i]:{fmt}} ({m[i] / d[i]:.2f}x)")
    print(f"{mode:8} {cells[0]:>16} {cells[1]:>18} {cells[2]:>22} {cells[3]:>14}")
print("targets: portfwd throughput >= 0.9x, conn/s >= 0.8x, req/s >= 0.8x, p99 <= 2x direct")
PY
