#!/usr/bin/env bash
# Benchmark: the pod network (issue #20's benchmark). A hostPort against a direct connection to
# the pod's IP, side by side in one run, and what joining the pod network adds to a pod's start.
#
# Servers: nginx (nginx-light, one worker, `return 200`) and `iperf3 -s`, host processes in a
# podkit pod (`podkit.io/host-process: 'true'`), listening on 0.0.0.0 in the pod. Clients on the
# host, one at a time: iperf3 (throughput), wrk with `Connection: close` (new connections/s),
# wrk keep-alive (requests/s and p99 latency). The modes:
#   direct: to a pod's IP and containerPort (status.podIP, on the bridge podkit0): the
#           yardstick;
#   hook:   to 127.0.0.1:hostPort of an identical pod, as podkit publishes hostPorts by default:
#           its connect-time BPF hook sends the client's connect() straight to the pod's IP
#           (no NAT, no conntrack entry);
#   nat:    the same with `podkit.io/host-ports: nat`: podkit's DNAT alone (nftables table
#           `ip podkit0`, the client masqueraded to the bridge's 10.90.0.1);
#   relay:  to 127.0.0.1:hostPort of a third one with `podkit.io/host-ports: relay` (podkit's
#           user-space relay into the pod's loopback);
#   podman: to 127.0.0.1:HOSTPORT of `podman run -d -p HOSTPORT:PORT --rootfs DIR` running the
#           same servers, DIR a root made here of the host's nginx, iperf3 and dash with the
#           libraries they link (podman's default network: netavark's bridge and iptables DNAT).
# direct, hook and nat get a pod each: both reach the pod from 10.90.0.1, and nginx closes first, so
# in one pod the TIME_WAIT sockets one mode leaves (60 s) would catch the other's SYNs (each
# carries TCP timestamps of another base, so the pod drops them as old: SYN retransmits, conn/s
# down by half or more, whichever mode runs second). Rounds rotate the order of the modes; the table shows medians and each mode's ratio to direct,
# then the issue's targets for hook and nat: >= 0.9x direct throughput, >= 0.8x connections/s and
# requests/s, p99 <= 1.2x direct, and ahead of podman on each.
# Pod up: `podkit apply -f` (returns once Running) of a one-container host-process pod running
# `sleep 1000` on the pod network against the same pod with `podkit.io/network: none`,
# interleaved after a warm-up round, each after `sync` and an idle spell, deletes unmeasured;
# with another pod on the network (the bridge and the NAT table in place), and first, when no
# pod is on the network yet, as the first pod (the bridge and its NAT table made by it; `podkit
# gc`, unmeasured, deletes them after each such round).
# Target: <= 2 ms added.
# --pin: the clients (wrk, iperf3 -c) on CPU 0 and every mode's servers on CPU 1 (`taskset` in
# podkit's pods, `--cpuset-cpus` for podman's container), so that keep-alive latency measures
# the path, not where the scheduler happened to put wrk and nginx: on 2 cores unpinned, p99 at
# 0.3 ms moved by a third between runs of the same build.
#
# Needs: root, python3, nft, iperf3, wrk, nginx (apt-get install -y iperf3 wrk nginx-light
# nftables); podman (Debian's 4.3, with runc and netavark) for its column, when installed. State
# in a temp dir: PODKIT_ROOT on a tmpfs there, PODKIT_STORAGE, podman's --root, --runroot,
# containers.conf, registries.conf and network_config_dir; never the machine's podman state.
# Traffic goes only to 127.0.0.1 and to the pods' addresses. On exit, also on failure: pods
# deleted (`podkit delete`, then `podkit gc`), the podman container removed, the iptables
# tables netavark leaves behind removed when this run made them, processes ended by pid.
#
# Usage: sudo PODKIT_BIN=path/to/podkit bench/network.sh [--duration S] [--rounds N]
#             [--connections N] [--up-rounds N] [--idle MS] [--pin] [--podman | --no-podman]
#        (defaults: --duration 3 --rounds 5 --connections 50 --up-rounds 10 --idle 300)
#        bench/network.sh --cni [--up-rounds N] [--idle MS]: only pod up and delete on the CNI
#        path (Debian's plugins) against podkit's bridge and no network (bench/cni.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=3
ROUNDS=5
CONNECTIONS=50
UP_ROUNDS=10
IDLE_MS=300
PODMAN=auto
PIN=no
CNI=no
usage="usage: $0 [--duration S] [--rounds N] [--connections N] [--up-rounds N] [--idle MS] [--pin] [--podman | --no-podman] [--cni]"
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --up-rounds) UP_ROUNDS="$2"; shift 2 ;;
        --idle) IDLE_MS="$2"; shift 2 ;;
        --podman) PODMAN=yes; shift ;;
        --no-podman) PODMAN=no; shift ;;
        --cni) CNI=yes; shift ;;
        --pin) PIN=yes; shift ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
done
for n in "$DURATION" "$ROUNDS" "$CONNECTIONS" "$UP_ROUNDS" "$IDLE_MS"; do
    [[ "$n" =~ ^[0-9]+$ ]] || { echo "$usage" >&2; exit 2; }
done
[ "$ROUNDS" -ge 1 ] && [ "$DURATION" -ge 1 ] && [ "$CONNECTIONS" -ge 1 ] \
    || { echo "bench/network.sh: --rounds, --duration and --connections >= 1" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "bench/network.sh: run as root (pods on the pod network)" >&2; exit 1; }
for tool in python3 nft iperf3 wrk nginx; do
    command -v "$tool" >/dev/null || {
        echo "bench/network.sh: missing $tool (apt-get install -y iperf3 wrk nginx-light nftables python3)" >&2
        exit 1
    }
done
if [ "$PIN" = yes ]; then
    command -v taskset >/dev/null || { echo "bench/network.sh: --pin needs taskset (util-linux)" >&2; exit 1; }
    [ "$(nproc)" -ge 2 ] || { echo "bench/network.sh: --pin needs 2 CPUs" >&2; exit 1; }
fi
case "$PODMAN" in
    yes) command -v podman >/dev/null || { echo "bench/network.sh: missing podman (apt-get install -y podman runc)" >&2; exit 1; } ;;
    auto) if command -v podman >/dev/null; then PODMAN=yes; else PODMAN=no; fi ;;
esac
[ -n "${PODKIT_BIN:-}" ] || {
    echo "bench/network.sh: set PODKIT_BIN to a release podkit (cargo build --release -p podkit --bins; podkit-supervise beside it)" >&2
    exit 1
}
[ -x "$PODKIT_BIN" ] || { echo "bench/network.sh: missing $PODKIT_BIN" >&2; exit 1; }
PODKIT_BIN="$(realpath "$PODKIT_BIN")"
[ -x "$(dirname "$PODKIT_BIN")/podkit-supervise" ] \
    || { echo "bench/network.sh: missing podkit-supervise beside $PODKIT_BIN" >&2; exit 1; }

# The CNI path's pod up: a mode of its own, in bench/cni.sh.
if [ "$CNI" = yes ]; then
    . bench/cni.sh
    cni_bench
    exit
fi

work="$(mktemp -d /tmp/podkit-bench-network.XXXXXX)"
# iptables tables before podman runs: netavark leaves its chains (and the tables) behind.
. bench/netavark.sh
tables_before="$(tables_now)"
# The driver ends what it started, also when it fails; this is for a driver that was killed.
cleanup() {
    set +e
    local d key
    if [ -d "$work/run/podkit/pods" ]; then
        for d in "$work"/run/podkit/pods/*/; do
            [ -d "$d" ] || continue
            key="$(basename "$d")"  # <namespace>_<name>
            PODKIT_ROOT="$work/run/podkit" PODKIT_STORAGE="$work/podkit/storage" \
                "$PODKIT_BIN" delete pod "${key#*_}" -n "${key%%_*}" --force >/dev/null 2>&1
        done
        PODKIT_ROOT="$work/run/podkit" PODKIT_STORAGE="$work/podkit/storage" \
            "$PODKIT_BIN" gc >/dev/null 2>&1
    fi
    if [ -d "$work/podman/root" ] && command -v podman >/dev/null; then
        CONTAINERS_CONF="$work/containers.conf" CONTAINERS_REGISTRIES_CONF="$work/registries.conf" \
            podman --root "$work/podman/root" --runroot "$work/run/pm/run" --tmpdir "$work/run/pm/tmp" \
            rm -f -a >/dev/null 2>&1
        remove_netavark_tables "$tables_before"
    fi
    # Mounts a killed tool left under the temp dir, deepest first, before removing it.
    awk -v w="$work/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r \
        | while read -r d; do umount -l "$d"; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir "$work/run"
mount -t tmpfs -o mode=0755 podkit-bench-run "$work/run"

PODKIT="$PODKIT_BIN" WORK="$work" DURATION="$DURATION" ROUNDS="$ROUNDS" CONNECTIONS="$CONNECTIONS" \
UP_ROUNDS="$UP_ROUNDS" IDLE_MS="$IDLE_MS" PODMAN="$PODMAN" PIN="$PIN" NOFILE="$(ulimit -Hn)" \
python3 - <<'PY'
import json, os, shutil, socket, statistics, subprocess, sys, time

PODKIT = os.environ["PODKIT"]
WORK = os.environ["WORK"]
DURATION = int(os.environ["DURATION"])
ROUNDS = int(os.environ["ROUNDS"])
CONNECTIONS = int(os.environ["CONNECTIONS"])
UP_ROUNDS = int(os.environ["UP_ROUNDS"])
IDLE = int(os.environ["IDLE_MS"]) / 1000
PODMAN = os.environ["PODMAN"] == "yes"
PIN = os.environ["PIN"] == "yes"
DEVNULL = subprocess.DEVNULL
# --pin: clients on CPU 0, servers on CPU 1.
CLIENT = ["taskset", "-c", "0"] if PIN else []
SERVER = ["taskset", "-c", "'1'"] if PIN else []  # YAML: a string

ENV = dict(os.environ)
for key in ("PODKIT", "WORK", "DURATION", "ROUNDS", "CONNECTIONS", "UP_ROUNDS", "IDLE_MS",
            "PODMAN", "PIN", "NOFILE", "PODKIT_LOG", "PODKIT_BRIDGE", "PODKIT_POD_SUBNET",
            "PODKIT_POD_MTU"):
    ENV.pop(key, None)
os.makedirs(f"{WORK}/logs")
os.makedirs(f"{WORK}/tmp")
ENV.update(
    CONTAINERS_REGISTRIES_CONF=f"{WORK}/registries.conf",
    REGISTRY_AUTH_FILE=f"{WORK}/no-auth.json",  # never the machine's credentials
    CONTAINERS_CONF=f"{WORK}/containers.conf",
    TMPDIR=f"{WORK}/tmp",
)
RUN = f"{WORK}/run"
PODKIT_ENV = dict(ENV, PODKIT_ROOT=f"{RUN}/podkit", PODKIT_STORAGE=f"{WORK}/podkit/storage")
with open(ENV["REGISTRY_AUTH_FILE"], "w") as f:
    f.write('{"auths": {}}\n')
with open(ENV["CONTAINERS_REGISTRIES_CONF"], "w") as f:
    f.write("unqualified-search-registries = []\n")
with open(ENV["CONTAINERS_CONF"], "w") as f:
    f.write(f"""[containers]
# runc fails to raise or even set podman's default limits here; the hard limits work
default_ulimits = ["nofile={os.environ['NOFILE']}:{os.environ['NOFILE']}", "nproc=4096:4096"]
[engine]
# crun refuses cgroup v1 hybrid mode
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[network]
# never /etc/containers/networks
network_config_dir = "{WORK}/podman/networks"
""")
PODMAN_CMD = ["podman", "--root", f"{WORK}/podman/root", "--runroot", f"{RUN}/pm/run",
              "--tmpdir", f"{RUN}/pm/tmp"]

# Ports: the servers' own, and each mode's hostPorts (below the ephemeral range).
HTTP, IPERF = 8080, 5201
HOST_PORTS = {"nat": (18080, 15201), "relay": (18081, 15202), "podman": (18082, 15203),
              "hook": (18083, 15204)}
NGINX = shutil.which("nginx")
IPERF3 = shutil.which("iperf3")
SLEEP = shutil.which("sleep")

log_no = 0


def run(cmd, env=ENV, check=True):
    """Runs cmd to its end, output to a log file; exits with that log when it fails."""
    global log_no
    log_no += 1
    path = f"{WORK}/logs/{log_no:04d}-{os.path.basename(cmd[0])}.log"
    with open(path, "w") as log:
        proc = subprocess.run(cmd, stdin=DEVNULL, stdout=log, stderr=log, env=env)
    if check and proc.returncode != 0:
        with open(path) as log:
            sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{log.read()[-4000:]}")
    return path


def output(cmd, env=ENV):
    proc = subprocess.run(cmd, stdin=DEVNULL, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


def nginx_conf(path, pid):
    with open(path, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
master_process off;
pid {pid};
error_log stderr warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen 0.0.0.0:{HTTP} backlog=4096;
        location / {{ return 200 "hello from the pod\\n"; }}
    }}
}}
""")


def server_pod(name, mode):
    """The servers' pod: nginx and iperf3 as host processes, their ports published."""
    conf = f"{WORK}/{name}-nginx.conf"
    nginx_conf(conf, f"{WORK}/{name}-nginx.pid")
    http, iperf = (f", hostPort: {p}" for p in HOST_PORTS[mode]) if mode in HOST_PORTS \
        else ("", "")
    relay = {"relay": ", podkit.io/host-ports: relay",
             "nat": ", podkit.io/host-ports: nat"}.get(mode, "")
    path = f"{WORK}/{name}.yaml"
    with open(path, "w") as f:
        f.write(f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{podkit.io/host-process: 'true'{relay}}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    command: [{", ".join(SERVER + [NGINX, "-c", conf])}]
    ports: [{{containerPort: {HTTP}{http}}}]
  - name: iperf
    command: [{", ".join(SERVER + [IPERF3, "-s", "-p", f"'{IPERF}'"])}]
    ports: [{{containerPort: {IPERF}{iperf}}}]
""")
    return path


def sleep_pod(name, network):
    annotations = "podkit.io/host-process: 'true'"
    if network == "none":
        annotations += ", podkit.io/network: none"
    path = f"{WORK}/{name}.yaml"
    with open(path, "w") as f:
        f.write(f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{{annotations}}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    command: [{SLEEP}, '1000']
""")
    return path


applied = set()  # manifests of pods that may exist


def apply(path):
    applied.add(path)
    run([PODKIT, "apply", "-f", path], PODKIT_ENV)


def delete(path):
    run([PODKIT, "delete", "-f", path], PODKIT_ENV)
    applied.discard(path)


def pod_ip(name):
    pod = json.loads(output([PODKIT, "get", "pod", name, "-o", "json"], PODKIT_ENV))
    ip = pod.get("status", {}).get("podIP")
    if not ip or not ip.startswith("10.90."):
        sys.exit(f"pod {name}: no address on the pod network (status.podIP={ip!r})")
    return ip


def podman_rootfs():
    """A root of the host's nginx, iperf3 and dash with the libraries they link."""
    root = f"{WORK}/rootfs"
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "run", "var/lib/nginx",
              "var/log/nginx"):
        os.makedirs(f"{root}/{d}", exist_ok=True)
    os.chmod(f"{root}/tmp", 0o1777)
    for binary in (NGINX, IPERF3, shutil.which("dash")):
        files = [binary] + [w for w in output(["ldd", binary]).split() if w.startswith("/")]
        for src in files:
            dst = f"{root}{src}"
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(os.path.realpath(src), dst)
    os.symlink(shutil.which("dash"), f"{root}/bin/sh")
    with open(f"{root}/etc/passwd", "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
    with open(f"{root}/etc/group", "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    nginx_conf(f"{root}/etc/nginx.conf", "/tmp/nginx.pid")
    return root


podman_started = False


def podman_up():
    global podman_started
    root = podman_rootfs()
    http, iperf = HOST_PORTS["podman"]
    podman_started = True
    pin = ["--cpuset-cpus", "1"] if PIN else []
    run(PODMAN_CMD + ["run", "-d", "--name", "netbench", *pin, "-p", f"{http}:{HTTP}",
                      "-p", f"{iperf}:{IPERF}", "--rootfs", root, "/bin/sh", "-c",
                      f"{IPERF3} -s -p {IPERF} & exec {NGINX} -c /etc/nginx.conf"])


def http_ok(host, port):
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def wait_ready(mode, host, http, iperf):
    """nginx answers, and a short iperf3 run goes through (iperf3 -s takes one test at a time:
    a bare connect would make it abort a test)."""
    deadline = time.monotonic() + 30
    while not http_ok(host, http):
        if time.monotonic() > deadline:
            sys.exit(f"{mode}: nginx never answered on {host}:{http}")
        time.sleep(0.05)
    while subprocess.run([IPERF3, "-c", host, "-p", str(iperf), "-t", "1"], stdin=DEVNULL,
                         stdout=DEVNULL, stderr=DEVNULL).returncode != 0:
        if time.monotonic() > deadline:
            sys.exit(f"{mode}: iperf3 never answered on {host}:{iperf}")
        time.sleep(0.2)


def ms(text):
    for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)


def wrk(url, close):
    cmd = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency", url]
    if close:
        cmd[1:1] = ["-H", "Connection: close"]
    cmd = CLIENT + cmd
    out = output(cmd)
    rps = p99 = None
    errors = 0
    for line in out.splitlines():
        f = line.split()
        if line.startswith("Requests/sec:"):
            rps = float(f[1])
        elif f[:1] == ["99%"]:
            p99 = ms(f[1])
        elif line.strip().startswith("Socket errors:"):
            errors += sum(int(x.strip(",")) for x in f[2::2][:4])  # connect, read, write, timeout
        elif line.strip().startswith("Non-2xx"):
            errors += int(f[-1])
    if rps is None or p99 is None:
        sys.exit(f"wrk printed no figures:\n{out}")
    return rps, p99, errors


def iperf3(host, port):
    out = json.loads(output(CLIENT + [IPERF3, "-c", host, "-p", str(port), "-t", str(DURATION),
                                      "-J"]))
    return out["end"]["sum_received"]["bits_per_second"] / 1e9


def settle():
    os.sync()
    time.sleep(IDLE)


def pod_up_rounds(tag):
    """Interleaved `podkit apply -f` of the sleep pod on the pod network and with none."""
    times = {"pod network": [], "none": []}
    for r in range(UP_ROUNDS + 1):  # round 0: warm-up
        order = ["pod network", "none"] if r % 2 else ["none", "pod network"]
        for network in order:
            path = sleep_pod(f"up-{tag}-{r}-{'net' if network == 'pod network' else 'none'}",
                             "none" if network == "none" else "pod")
            settle()
            t0 = time.monotonic()
            apply(path)
            elapsed = time.monotonic() - t0
            delete(path)
            if tag == "first":
                # The bridge and its NAT table stay for the next pod; gc deletes them when no
                # pod is on them, so the next round's pod is the first again.
                run([PODKIT, "gc"], PODKIT_ENV)
            if r > 0:
                times[network].append(elapsed * 1000)
    return times


def bridge_exists():
    return subprocess.run(["ip", "link", "show", "podkit0"], stdin=DEVNULL, stdout=DEVNULL,
                          stderr=DEVNULL).returncode == 0


modes = ["direct", "hook", "nat", "relay"] + (["podman"] if PODMAN else [])
results = {m: [] for m in modes}
errors = {m: 0 for m in modes}
up_first = None
try:
    with open("/proc/loadavg") as f:
        load_start = f.read().split()[0]
    # Pod up as the first pod on the network: only when no pod of anyone's is on it.
    if UP_ROUNDS and not bridge_exists():
        print("pod up, first pod on the network ...", file=sys.stderr)
        up_first = pod_up_rounds("first")
    elif UP_ROUNDS:
        print("podkit0 exists already (another pod is on it): no first-pod figures",
              file=sys.stderr)

    for mode in ("direct", "hook", "nat", "relay"):
        apply(server_pod(f"nb-{mode}", mode))
    ip = pod_ip("nb-direct")
    if PODMAN:
        podman_up()
    target = {
        "direct": (ip, HTTP, IPERF),
        "hook": ("127.0.0.1",) + HOST_PORTS["hook"],
        "nat": ("127.0.0.1",) + HOST_PORTS["nat"],
        "relay": ("127.0.0.1",) + HOST_PORTS["relay"],
        "podman": ("127.0.0.1",) + HOST_PORTS["podman"],
    }
    for mode in modes:
        wait_ready(mode, *target[mode])
    # Warm-up, unrecorded: a short wrk run through each mode (listen queues, conntrack, caches).
    for mode in modes:
        host, http, _ = target[mode]
        run(CLIENT + ["wrk", "-t1", f"-c{CONNECTIONS}", "-d1s", f"http://{host}:{http}/"])

    for r in range(ROUNDS):
        order = modes[r % len(modes):] + modes[:r % len(modes)]
        for mode in order:
            print(f"round {r + 1}/{ROUNDS}: {mode} ...", file=sys.stderr)
            host, http, iperf = target[mode]
            gbps = iperf3(host, iperf)
            url = f"http://{host}:{http}/"
            cps, _, e1 = wrk(url, close=True)
            rps, p99, e2 = wrk(url, close=False)
            errors[mode] += e1 + e2
            results[mode].append((gbps, cps, rps, p99))
            print(f"  {mode}: {gbps:.2f} Gbit/s, {cps:.0f} conn/s, {rps:.0f} req/s, p99 {p99:.3f} ms",
                  file=sys.stderr)

    up_steady = None
    if UP_ROUNDS:
        print("pod up, another pod on the network ...", file=sys.stderr)
        up_steady = pod_up_rounds("steady")
finally:
    for path in list(applied):
        subprocess.run([PODKIT, "delete", "-f", path, "--force"], stdin=DEVNULL,
                       stdout=DEVNULL, stderr=DEVNULL, env=PODKIT_ENV)
    if podman_started:
        subprocess.run(PODMAN_CMD + ["rm", "-f", "-t", "1", "netbench"], stdin=DEVNULL,
                       stdout=DEVNULL, stderr=DEVNULL, env=ENV)

med = {m: [statistics.median(col) for col in zip(*results[m])] for m in modes}
d = med["direct"]
with open("/proc/loadavg") as f:
    load_end = f.read().split()[0]
print()
print(f"pod network bench: median of {ROUNDS} rounds (modes rotated), {DURATION}s per run, "
      f"wrk -t1 -c{CONNECTIONS}, nproc={os.cpu_count()}, "
      f"{'clients on CPU 0 and servers on CPU 1, ' if PIN else ''}load {load_start} at start, "
      f"{load_end} at end; direct's pod IP {ip}")
print()
print("| mode | iperf3 Gbit/s | conn/s (Connection: close) | req/s (keep-alive) | p99 ms (keep-alive) |")
print("|---|---|---|---|---|")
names = {"direct": "direct (host -> pod IP:port)",
         "hook": "hook (127.0.0.1:hostPort, the default: connect-time BPF hook)",
         "nat": "nat (127.0.0.1:hostPort, podkit.io/host-ports: nat: DNAT)",
         "relay": "relay (127.0.0.1:hostPort, podkit.io/host-ports: relay)",
         "podman": "podman (127.0.0.1:HOSTPORT, podman run -p)"}
for mode in modes:
    m = med[mode]
    cells = []
    for i, fmt in enumerate((".2f", ".0f", ".0f", ".3f")):
        cells.append(f"{m[i]:{fmt}}" if mode == "direct" else f"{m[i]:{fmt}} ({m[i] / d[i]:.2f}x)")
    print(f"| {names[mode]} | " + " | ".join(cells) + " |")
odd = [f"{m}: {n}" for m, n in errors.items() if n]
if odd:
    print(f"\nwrk socket errors or non-2xx answers (all runs): {', '.join(odd)}")


def verdict(ok):
    return "met" if ok else "NOT met"


for target in ("hook", "nat"):
    n = med[target]
    print()
    print(f"targets ({names[target]}):")
    rows = [
        (f"throughput >= 0.9x direct: {n[0] / d[0]:.2f}x", n[0] >= 0.9 * d[0]),
        (f"connections/s >= 0.8x direct: {n[1] / d[1]:.2f}x", n[1] >= 0.8 * d[1]),
        (f"requests/s >= 0.8x direct: {n[2] / d[2]:.2f}x", n[2] >= 0.8 * d[2]),
        (f"p99 <= 1.2x direct: {n[3] / d[3]:.2f}x", n[3] <= 1.2 * d[3]),
    ]
    if PODMAN:
        p = med["podman"]
        # Paired by round (the two measured in the same round, minutes apart at most): in how
        # many rounds the mode was ahead, which the machine's drift between rounds moves less.
        ahead = [sum((a < b) if i == 3 else (a > b)
                     for a, b in zip((r[i] for r in results[target]),
                                     (r[i] for r in results["podman"])))
                 for i in range(4)]
        won = [f" (ahead in {k} of {ROUNDS} rounds)" for k in ahead]
        rows += [
            (f"throughput ahead of podman: {n[0]:.2f} vs {p[0]:.2f} Gbit/s{won[0]}", n[0] > p[0]),
            (f"connections/s ahead of podman: {n[1]:.0f} vs {p[1]:.0f}{won[1]}", n[1] > p[1]),
            (f"requests/s ahead of podman: {n[2]:.0f} vs {p[2]:.0f}{won[2]}", n[2] > p[2]),
            (f"p99 below podman's: {n[3]:.3f} vs {p[3]:.3f} ms{won[3]}", n[3] < p[3]),
        ]
    else:
        rows.append(("ahead of podman: not measured (podman not installed)", False))
    for text, ok in rows:
        print(f"- {text}: {verdict(ok)}")

print()
print(f"pod up: `podkit apply -f` of a one-container host-process pod (sleep 1000), median (p90) "
      f"of {UP_ROUNDS} rounds interleaved after a warm-up, {IDLE * 1000:.0f} ms idle before each")


def p90(xs):
    xs = sorted(xs)
    return xs[round((len(xs) - 1) * 0.9)]


if UP_ROUNDS:
    print("| on the network | pod network | podkit.io/network: none | added |")
    print("|---|---|---|---|")
    for label, times in (("another pod on it (bridge and NAT table in place)", up_steady),
                         ("first pod (bridge and NAT table made)", up_first)):
        if times is None:
            print(f"| {label} | not measured (podkit0 existed at the start) | | |")
            continue
        net, none = times["pod network"], times["none"]
        print(f"| {label} | {statistics.median(net):.1f} ms ({p90(net):.1f}) | "
              f"{statistics.median(none):.1f} ms ({p90(none):.1f}) | "
              f"{statistics.median(net) - statistics.median(none):+.1f} ms |")
    added = statistics.median(up_steady["pod network"]) - statistics.median(up_steady["none"])
    print(f"\ntarget: pod up with networking <= 2 ms added (another pod on the network): "
          f"{added:+.1f} ms, {verdict(added <= 2)}")
PY
