#!/usr/bin/env bash
# Measures portfwd against a direct connection, against the leanest relays user space allows
# (the yardsticks) and against socat, in one run on this machine, and prints a table with ratios
# to direct and the CPU each side spent.
#
#   sudo bench/portfwd.sh            # builds portfwd and the yardsticks (release) unless both
#                                    # PORTFWD= and EXAMPLES= are given
#   DURATION=10 ROUNDS=5 CONNECTIONS=100 sudo -E bench/portfwd.sh
#   PORTFWD=target/release/portfwd EXAMPLES=target/release/examples MODES="direct portfwd" ...
#
# Setup: a network namespace "pfbench-PID" (lo up) runs iperf3 -s and nginx (1 worker,
# `return 200`). The modes:
# - direct: the client inside that namespace, on its 127.0.0.1: the loopback speed a forward
#   aims at;
# - portfwd: the client on the host through `portfwd --netns NS`;
# - pf-clean: the same, but the client and portfwd run in a second fresh namespace "NS-host":
#   no host firewall (a host's netfilter rules make conntrack track every host connection),
#   so it shows what the host's own setup adds;
# - epoll, splice: the yardsticks, the client on the host through the leanest relays user
#   space allows: portfwd/examples/epoll_relay.rs (one thread, level-triggered epoll, exactly
#   one splice(2) in and one out per message and direction) and
#   portfwd/examples/splice_relay.rs (blocking splice loops, a thread per direction): what any
#   user-space relay costs here, against what portfwd costs;
# - socat: ONE socat relay like the others, listening on the host and dialing inside the
#   namespace (`TCP-LISTEN,fork,nodelay` to `TCP:127.0.0.1:PORT,nodelay`). Debian's socat 1.7.4
#   has no ACCEPT-FD or netns option, so a small LD_PRELOAD shim (compiled here) moves socat
#   into the namespace right after its listen(2): the listener stays on the host, every forked
#   child dials inside the pod.
# CPU: utime+stime (and that of reaped children) of the relay and the servers from
# /proc/PID/stat, and of the client from its rusage, over each run; loopback softirq work is
# charged to the process it runs in. Shown per GB moved (iperf3) and per request (wrk).
# Traffic stays on loopback. Needs root, iperf3, wrk, nginx (nginx-light), socat, python3,
# iproute2, cc. Everything it starts is stopped by pid and the namespaces deleted on exit.
set -euo pipefail

DURATION=${DURATION:-3}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-50}
MODES=${MODES:-direct portfwd pf-clean epoll splice socat}
NS=pfbench-$$
NS_HOST=pfbench-$$-host
WORK=$(mktemp -d /tmp/pfbench.XXXXXX)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    ip netns del "$NS_HOST" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "bench/portfwd.sh: needs root (it creates a network namespace)" >&2; exit 1; }
for tool in iperf3 wrk nginx socat python3 ip cc; do
    command -v "$tool" >/dev/null || { echo "bench/portfwd.sh: needs $tool (apt-get install iperf3 wrk nginx-light socat python3 iproute2 gcc)" >&2; exit 1; }
done

root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${PORTFWD:-}" ] || [ -z "${EXAMPLES:-}" ]; then
    cargo build --quiet --release -p portfwd --bin portfwd --examples --manifest-path "$root/Cargo.toml"
    PORTFWD=${PORTFWD:-${CARGO_TARGET_DIR:-$root/target}/release/portfwd}
    EXAMPLES=${EXAMPLES:-${CARGO_TARGET_DIR:-$root/target}/release/examples}
fi

cat >"$WORK/netns_after_listen.c" <<'C'
/* LD_PRELOAD: after the first successful listen(2), move the (single-threaded) process into
 * the network namespace $NETNS_AFTER_LISTEN, so later sockets (socat's dials) are made there. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>
int listen(int fd, int backlog) {
    int (*real)(int, int) = (int (*)(int, int))dlsym(RTLD_NEXT, "listen");
    int ret = real(fd, backlog);
    const char *path = getenv("NETNS_AFTER_LISTEN");
    if (ret == 0 && path) {
        int ns = open(path, O_RDONLY | O_CLOEXEC);
        if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) abort();
        close(ns);
        unsetenv("NETNS_AFTER_LISTEN");
    }
    return ret;
}
C
cc -shared -fPIC -O2 -o "$WORK/netns_after_listen.so" "$WORK/netns_after_listen.c" -ldl

ip netns add "$NS"
ip -n "$NS" link set lo up
ip netns add "$NS_HOST"
ip -n "$NS_HOST" link set lo up

# Servers inside the namespace.
ip netns exec "$NS" iperf3 -s -p 5201 >/dev/null 2>&1 &
PIDS+=($!)
IPERF_PID=$!
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
NGINX_PID=$!

# The relays under test, on ports below the ephemeral range (32768-): portfwd on the server's
# port + 10000, socat + 20000, the yardsticks splice + 1000 and epoll + 2000.
declare -A RELAY_PIDS
"$PORTFWD" ${PORTFWD_ARGS:-} --quiet --netns "$NS" --address 127.0.0.1 15201:5201 18080:8080 >"$WORK/portfwd.out" 2>&1 &
PIDS+=($!)
RELAY_PIDS[portfwd]=$!
ip netns exec "$NS_HOST" "$PORTFWD" ${PORTFWD_ARGS:-} --quiet --netns "$NS" --address 127.0.0.1 15201:5201 18080:8080 >"$WORK/pf-clean.out" 2>&1 &
PIDS+=($!)
RELAY_PIDS[pf-clean]=$!
RELAY_PIDS[splice]=""
RELAY_PIDS[epoll]=""
RELAY_PIDS[socat]=""
for port in 5201 8080; do
    "$EXAMPLES/splice_relay" "127.0.0.1:$((1000 + port))" "/run/netns/$NS" "127.0.0.1:$port" 2>>"$WORK/relays.err" &
    PIDS+=($!)
    RELAY_PIDS[splice]+=" $!"
    "$EXAMPLES/epoll_relay" "127.0.0.1:$((2000 + port))" "/run/netns/$NS" "127.0.0.1:$port" 2>>"$WORK/relays.err" &
    PIDS+=($!)
    RELAY_PIDS[epoll]+=" $!"
    LD_PRELOAD="$WORK/netns_after_listen.so" NETNS_AFTER_LISTEN="/run/netns/$NS" \
        socat "TCP-LISTEN:$((20000 + port)),bind=127.0.0.1,fork,reuseaddr,backlog=4096,nodelay" \
        "TCP:127.0.0.1:$port,nodelay" 2>>"$WORK/relays.err" &
    PIDS+=($!)
    RELAY_PIDS[socat]+=" $!"
done

wait_port() { # NETNS_OR_EMPTY PORT
    for _ in $(seq 100); do
        if [ -n "$1" ]; then ip netns exec "$1" bash -c "exec 3<>/dev/tcp/127.0.0.1/$2" 2>/dev/null && return 0
        else bash -c "exec 3<>/dev/tcp/127.0.0.1/$2" 2>/dev/null && return 0; fi
        sleep 0.1
    done
    echo "bench/portfwd.sh: port $2 never opened" >&2; exit 1
}
wait_port "$NS" 5201; wait_port "$NS" 8080
for base in 10000 20000 1000 2000; do wait_port "" $((base + 5201)); wait_port "" $((base + 8080)); done
wait_port "$NS_HOST" 15201; wait_port "$NS_HOST" 18080
# A port taken by someone else would measure them: every process started must still run.
for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "bench/portfwd.sh: process $pid exited at start (a port in use?)" >&2; exit 1; }
done

run() { # MODE COMMAND...: the client, inside the namespace for "direct" (NS_HOST for
        # "pf-clean"), else on the host; its CPU seconds go to $WORK/client.cpu
    local mode=$1; shift
    case $mode in
        direct) set -- ip netns exec "$NS" "$@" ;;
        pf-clean) set -- ip netns exec "$NS_HOST" "$@" ;;
    esac
    python3 -c 'import resource, subprocess, sys
code = subprocess.run(sys.argv[2:]).returncode
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{u.ru_utime + u.ru_stime}\n")
sys.exit(code)' "$WORK/client.cpu" "$@"
}
port_of() { # MODE BASE_PORT
    case $1 in direct) echo "$2" ;; portfwd | pf-clean) echo $((10000 + $2)) ;; socat) echo $((20000 + $2)) ;;
        splice) echo $((1000 + $2)) ;; epoll) echo $((2000 + $2)) ;; esac
}
TCK=$(getconf CLK_TCK)
cpu() { # PIDS...: CPU seconds so far of these processes and their reaped children
    local ticks=0 pid
    for pid in "$@"; do
        ticks=$((ticks + $(awk '{sub(/.*\) /, ""); print $12 + $13 + $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$ticks $TCK" | awk '{printf "%.2f", $1 / $2}'
}
# The relay and server CPU of one run: seconds over it, after its forked children are reaped.
measure() { # MODE SERVER_PID COMMAND... -> prints "relay_cpu server_cpu client_cpu" after output
    local mode=$1 server=$2; shift 2
    local relays=${RELAY_PIDS[$mode]:-}
    local r0 s0 r1 s1
    r0=$( [ -n "$relays" ] && cpu $relays || echo 0 ); s0=$(cpu "$server")
    run "$mode" "$@" >"$WORK/out"
    sleep 0.3
    r1=$( [ -n "$relays" ] && cpu $relays || echo 0 ); s1=$(cpu "$server")
    echo "$(awk -v a="$r0" -v b="$r1" 'BEGIN{print b - a}') $(awk -v a="$s0" -v b="$s1" 'BEGIN{print b - a}') $(cat "$WORK/client.cpu")"
}

# Rounds alternate the modes, each round starting one mode later, and the table shows each
# mode's median: on a shared machine, load that comes and goes then hits every mode alike.
: >"$WORK/results"
LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
read -r -a modes <<<"$MODES"
for round in $(seq "$ROUNDS"); do
    for i in "${!modes[@]}"; do
        mode=${modes[$(((i + round - 1) % ${#modes[@]}))]}
        echo "round $round/$ROUNDS: $mode ..." >&2
        p=$(port_of "$mode" 5201)
        cpu_bulk=$(measure "$mode" "$IPERF_PID" iperf3 -c 127.0.0.1 -p "$p" -t "$DURATION" -J)
        bulk=$(python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum_received"]; print(e["bits_per_second"]/1e9, e["bytes"])' <"$WORK/out")
        p=$(port_of "$mode" 8080)
        cpu_close=$(measure "$mode" "$NGINX_PID" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -H 'Connection: close' "http://127.0.0.1:$p/")
        close=$(awk '/Requests\/sec/ {rps=$2} / requests in / {n=$1} END {print rps, n}' "$WORK/out")
        cpu_keep=$(measure "$mode" "$NGINX_PID" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$p/")
        keep=$(awk '/Requests\/sec/ {rps=$2} / requests in / {n=$1} $1 == "99%" {p99=$2} END {print rps, n, p99}' "$WORK/out")
        echo "$mode $bulk $cpu_bulk $close $cpu_close $keep $cpu_keep" >>"$WORK/results"
    done
done

python3 - "$WORK/results" "$DURATION" "$CONNECTIONS" "$ROUNDS" "$LOAD_START" <<'PY'
import os, statistics, sys
def ms(text):
    for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)
runs = {}
for line in open(sys.argv[1]):
    f = line.split()
    mode = f[0]
    gbps, gbytes = float(f[1]), float(f[2]) / 1e9
    bulk_cpu = [float(x) / gbytes for x in f[3:6]]  # relay, server, client: s per GB
    cps, n_close = float(f[6]), float(f[7])
    close_cpu = [float(x) / n_close * 1e6 for x in f[8:11]]  # us per connection
    rps, n_keep, p99 = float(f[11]), float(f[12]), ms(f[13])
    keep_cpu = [float(x) / n_keep * 1e6 for x in f[14:17]]  # us per request
    runs.setdefault(mode, []).append([gbps, cps, rps, p99] + bulk_cpu + close_cpu + keep_cpu)
med = {m: [statistics.median(col) for col in zip(*rows)] for m, rows in runs.items()}
d = med["direct"]
print(f"portfwd bench: median of {sys.argv[4]} rounds, {sys.argv[2]}s per run, "
      f"wrk -t1 -c{sys.argv[3]}, nproc={os.cpu_count()}, "
      f"load {sys.argv[5]} at start, {os.getloadavg()[0]:.2f} at end")
print(f"{'':8} {'iperf3 Gbit/s':>16} {'conn/s (close)':>18} {'req/s (keep-alive)':>22} {'p99 ms':>14}")
modes = [m for m in ("direct", "portfwd", "pf-clean", "epoll", "splice", "socat") if m in med]
for mode in modes:
    m = med[mode]
    cells = []
    for i, fmt in enumerate((".2f", ".0f", ".0f", ".2f")):
        cells.append(f"{m[i]:{fmt}}" if mode == "direct" else f"{m[i]:{fmt}} ({m[i] / d[i]:.2f}x)")
    print(f"{mode:8} {cells[0]:>16} {cells[1]:>18} {cells[2]:>22} {cells[3]:>14}")
print("CPU (relay / server / client / total): s per GB (iperf3), us per connection (close), "
      "us per request (keep-alive)")
for mode in modes:
    m = med[mode]
    groups = []
    for start, fmt in ((4, ".2f"), (7, ".0f"), (10, ".1f")):
        r, s, c = m[start:start + 3]
        groups.append(f"{r:{fmt}}/{s:{fmt}}/{c:{fmt}}/{r + s + c:{fmt}}")
    print(f"{mode:8} {groups[0]:>22} {groups[1]:>18} {groups[2]:>24}")
print("targets: portfwd throughput >= 0.9x, conn/s >= 0.8x, req/s >= 0.8x, p99 <= 2x direct")
PY
