#!/usr/bin/env bash
# Benchmark: a whole file applied and deleted, podkit against `podman kube play`, side by side
# in one run (issue #19's benchmark).
#
# The file: a ConfigMap, a Deployment of 3 replicas (each pod one container of a busybox image
# built here and served by Debian's `docker-registry` on 127.0.0.1, already in each tool's
# store, running `sleep 1000` under a shell that exits on SIGTERM and reading a key of the
# ConfigMap into its env) and a Service. Measured, as root, with everything in a temp dir of its
# own and the state roots on a tmpfs mounted in it (as /run is a tmpfs on most hosts):
#   up:   `podkit apply -f FILE` until every pod of the Deployment is Ready (its status files
#         read every 2 ms: apply returns once the objects are kept and the controller runs),
#         against `podman kube play FILE` (returns once its containers run);
#   down: `podkit delete -f FILE` (returns once the pods, the controller and the objects are
#         gone) against `podman kube down FILE` (its cleanup processes waited out unmeasured).
# Pods are on each tool's pod network (podkit's bridge; podman's default, netavark's bridge),
# or with --network none on their loopback only in both (`podkit.io/network: none`, `podman kube
# play --network none`).
# The floor: the runtime alone on three bundles of the same image prepared by umoci (pid,
# mount, IPC and UTS namespaces), `runc create` + `runc start` of the three side by side, and
# down = SIGTERM to each, its exit, `runc delete`: what any tool driving runc pays. The table
# says how many pods podman made of the Deployment.
# --runtime crun: podkit runs the pods with crun (PODKIT_RUNTIME=crun) and the floor is crun
# alone, started as podkit starts it on a hybrid cgroup host (a mount namespace without
# /sys/fs/cgroup/unified, --cgroup-manager=disabled); podman too uses crun where it can, but
# crun 1.8.1 refuses hybrid hosts under podman, so there podman stays on runc (printed).
# Each timed step after `sync` and an idle spell (--idle MS), rounds interleaved after a
# warm-up round, medians (p90). Prints the table and the target: >= 10x faster than podman.
#
# Needs: root, python3, docker-registry, skopeo, umoci, runc, busybox-static (/bin/busybox); podman
# (4.3 from Debian) for its column, when installed (--podman installs it with
# ../shared/bench/podman-setup.sh). Traffic goes only to 127.0.0.1. Every process started is
# ended by pid; the temp dir, pods, mounts, cgroups podman leaves are removed on exit, also when
# the run fails.
#
# Usage: sudo PODKIT_BIN=path/to/podkit bench/workloads.sh [--rounds N] [--idle MS]
#             [--network pod|none] [--runtime runc|crun] [--podman | --no-podman]
#             (defaults: --rounds 10 --idle 1000 --network pod --runtime runc)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=10
IDLE_MS=1000
NETWORK=pod
PODMAN=auto
RUNTIME=runc
usage="usage: $0 [--rounds N] [--idle MS] [--network pod|none] [--runtime runc|crun] [--podman | --no-podman]"
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --idle) IDLE_MS="$2"; shift 2 ;;
        --network) NETWORK="$2"; shift 2 ;;
        --runtime) RUNTIME="$2"; shift 2 ;;
        --podman) PODMAN=yes; shift ;;
        --no-podman) PODMAN=no; shift ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
done
case "$NETWORK" in pod|none) ;; *) echo "$usage" >&2; exit 2 ;; esac
case "$RUNTIME" in runc|crun) ;; *) echo "$usage" >&2; exit 2 ;; esac
for n in "$ROUNDS" "$IDLE_MS"; do
    [[ "$n" =~ ^[0-9]+$ ]] || { echo "$usage" >&2; exit 2; }
done
[ "$ROUNDS" -ge 1 ] || { echo "bench/workloads.sh: --rounds >= 1" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "bench/workloads.sh: run as root" >&2; exit 1; }
for tool in python3 docker-registry skopeo umoci runc "$RUNTIME" /bin/busybox; do
    command -v "$tool" >/dev/null || { echo "bench/workloads.sh: missing $tool" >&2; exit 1; }
done
case "$PODMAN" in
    yes)
        if ! command -v podman >/dev/null; then
            setup=../shared/bench/podman-setup.sh
            [ -x "$setup" ] || setup="bash $setup"
            $setup
        fi ;;
    auto) if command -v podman >/dev/null; then PODMAN=yes; else PODMAN=no; fi ;;
esac
if [ -z "${PODKIT_BIN:-}" ]; then
    cargo build -q --release --bin podkit --bin podkit-supervise
    PODKIT_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/podkit"
fi
[ -x "$PODKIT_BIN" ] || { echo "bench/workloads.sh: missing $PODKIT_BIN" >&2; exit 1; }
PODKIT_BIN="$(realpath "$PODKIT_BIN")"

work="$(mktemp -d /tmp/podkit-bench-workloads.XXXXXX)"
# iptables tables before podman runs: netavark leaves its chains (and the tables) behind.
. bench/netavark.sh
tables_before="$(tables_now)"
# The driver ends what it started, also when it fails; this is for a driver that was killed.
cleanup() {
    set +e
    local d pid key
    # Controllers first (they would replace the pods), by the pid each one locked.
    for d in "$work"/run/podkit/controllers/*/*/*/; do
        [ -f "$d/pid" ] || continue
        pid=$(cat "$d/pid")
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "podkit controller"; then
            kill "$pid"
        fi
    done
    if [ -d "$work/run/podkit/pods" ]; then
        for d in "$work"/run/podkit/pods/*/; do
            [ -d "$d" ] || continue
            key="$(basename "$d")"  # <namespace>_<name>
            PODKIT_ROOT="$work/run/podkit" PODKIT_STORAGE="$work/podkit/storage" \
                "$PODKIT_BIN" delete pod "${key#*_}" -n "${key%%_*}" --force >/dev/null 2>&1
        done
        PODKIT_ROOT="$work/run/podkit" "$PODKIT_BIN" gc >/dev/null 2>&1
    fi
    if [ -d "$work/run/$RUNTIME" ]; then
        for d in $("$RUNTIME" --root "$work/run/$RUNTIME" list -q 2>/dev/null); do
            if [ "$RUNTIME" = crun ]; then
                # crun's kill of a container it made with --cgroup-manager=disabled.
                unshare -m sh -c "umount /sys/fs/cgroup/unified 2>/dev/null; \
                    crun --cgroup-manager=disabled --root '$work/run/crun' delete -f '$d'" \
                    >/dev/null 2>&1
            else
                runc --root "$work/run/runc" delete -f "$d" >/dev/null 2>&1
            fi
        done
    fi
    if [ -d "$work/podman/pods/root" ] && command -v podman >/dev/null; then
        CONTAINERS_CONF="$work/containers.conf" podman --root "$work/podman/pods/root" \
            --runroot "$work/run/pp/run" --tmpdir "$work/run/pp/tmp" \
            pod rm -f -a >/dev/null 2>&1
    fi
    remove_netavark_tables "$tables_before"
    # The registry, by the pid the driver wrote, if that pid is still the registry of this run.
    if [ -f "$work/registry.pid" ]; then
        pid=$(cat "$work/registry.pid")
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$work/registry/config.yml"; then
            kill "$pid"
        fi
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

PODKIT="$PODKIT_BIN" WORK="$work" ROUNDS="$ROUNDS" IDLE_MS="$IDLE_MS" NETWORK="$NETWORK" PODMAN="$PODMAN" \
RUNTIME="$RUNTIME" \
NOFILE="$(ulimit -Hn)" python3 - <<'PY'
import glob, gzip, hashlib, io, json, os, select, shutil, signal, socket, statistics
import subprocess, sys, tarfile, threading, time

PODKIT = os.environ["PODKIT"]
WORK = os.environ["WORK"]
ROUNDS = int(os.environ["ROUNDS"])
IDLE = int(os.environ["IDLE_MS"]) / 1000
# pod: each tool's own pod network (podkit's bridge, podman's netavark bridge); none: loopback
# only in both (`podkit.io/network: none`, `podman kube play --network none`).
NETWORK = os.environ["NETWORK"]
PODMAN_NETWORK = ["--network", "none"] if NETWORK == "none" else []
PODMAN = os.environ["PODMAN"] == "yes"
# The runtime of podkit's pods and of the floor; podman's is the same, but for crun on a hybrid
# cgroup host (cgroup v1 with cgroup2 at /sys/fs/cgroup/unified), which crun refuses under podman.
RUNTIME = os.environ["RUNTIME"]
HYBRID = os.path.ismount("/sys/fs/cgroup/unified") and not os.path.exists(
    "/sys/fs/cgroup/cgroup.controllers")
PODMAN_RUNTIME = "runc" if RUNTIME == "crun" and HYBRID else RUNTIME
DEVNULL = subprocess.DEVNULL
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}[os.uname().machine]
MEMBER = "trap 'exit 0' TERM; sleep 1000 & wait"

os.makedirs(f"{WORK}/logs")
os.makedirs(f"{WORK}/tmp")
ENV = dict(os.environ)
for key in ("PODKIT", "WORK", "ROUNDS", "IDLE_MS", "NETWORK", "PODMAN", "NOFILE", "RUNTIME"):
    ENV.pop(key, None)
ENV.update(
    CONTAINERS_REGISTRIES_CONF=f"{WORK}/registries.conf",
    REGISTRY_AUTH_FILE=f"{WORK}/no-auth.json",  # never the machine's credentials
    CONTAINERS_CONF=f"{WORK}/containers.conf",
    TMPDIR=f"{WORK}/tmp",
)
ENV.pop("PODKIT_LOG", None)
with open(ENV["REGISTRY_AUTH_FILE"], "w") as f:
    f.write('{"auths": {}}\n')  # podman wants the file to exist
# State roots (podkit's pods, runc's containers, podman's runroot and tmpdir) on the tmpfs at
# RUN, where each tool keeps them by default (/run); images and writable layers on disk.
RUN = f"{WORK}/run"
PODKIT_ENV = dict(ENV, PODKIT_ROOT=f"{RUN}/podkit", PODKIT_STORAGE=f"{WORK}/podkit/storage",
                  PODKIT_RUNTIME=RUNTIME)
with open(f"{WORK}/containers.conf", "w") as f:
    f.write(f"""[containers]
# runc fails to raise or even set podman's default limits here; the hard limits work
default_ulimits = ["nofile={os.environ['NOFILE']}:{os.environ['NOFILE']}", "nproc=4096:4096"]
[engine]
# crun refuses cgroup v1 hybrid mode
runtime = "{PODMAN_RUNTIME}"
cgroup_manager = "cgroupfs"
events_logger = "file"
[network]
# never /etc/containers/networks
network_config_dir = "{WORK}/podman/networks"
""")

log_no = 0


def run(cmd, env=ENV):
    """Runs cmd to its end, output to a log file; exits with that log when it fails."""
    global log_no
    log_no += 1
    path = f"{WORK}/logs/{log_no:04d}-{os.path.basename(cmd[0])}.log"
    with open(path, "w") as log:
        proc = subprocess.run(cmd, stdin=DEVNULL, stdout=log, stderr=log, env=env)
    if proc.returncode != 0:
        with open(path) as log:
            sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{log.read()[-4000:]}")
    return path


def timed(cmd, env=ENV):
    """Wall seconds of run(cmd), and its log."""
    t0 = time.monotonic()
    log = run(cmd, env)
    return time.monotonic() - t0, log


def settle():
    """Every timed step starts with nothing left to write back and after an idle spell."""
    os.sync()
    time.sleep(IDLE)


# --- the image, built as an OCI layout ---------------------------------------------------------

class Hashing:
    """A file writer hashing what goes through."""

    def __init__(self, f):
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, data):
        self.sha.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self):
        self.f.flush()


LAYOUT = f"{WORK}/layout"
os.makedirs(f"{LAYOUT}/blobs/sha256")


def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(f"{LAYOUT}/blobs/sha256/{digest}", "wb") as f:
        f.write(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


FILE_BYTES = [0]


def layer(add):
    """A gzip layer blob from add(tarfile): its descriptor, diff_id and bytes of files."""
    FILE_BYTES[0] = 0
    tmp = f"{LAYOUT}/layer.gz"
    with open(tmp, "wb") as raw:
        out = Hashing(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
            plain = Hashing(gz)
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                add(tar)
    digest = out.sha.hexdigest()
    os.rename(tmp, f"{LAYOUT}/blobs/sha256/{digest}")
    return ({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
             "digest": f"sha256:{digest}", "size": out.size}, f"sha256:{plain.sha.hexdigest()}",
            FILE_BYTES[0])


def entry(tar, path, kind=tarfile.REGTYPE, mode=0o644, data=b"", target=""):
    info = tarfile.TarInfo(path)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, 1_714_521_600, target
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    FILE_BYTES[0] += info.size
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def busybox(tar):
    for d, mode in (("bin", 0o755), ("etc", 0o755), ("proc", 0o555), ("sys", 0o555),
                    ("dev", 0o755), ("tmp", 0o1777), ("root", 0o700)):
        entry(tar, d, tarfile.DIRTYPE, mode)
    with open("/bin/busybox", "rb") as f:
        entry(tar, "bin/busybox", mode=0o755, data=f.read())
    for applet in ("sh", "sleep", "ls", "cat", "echo", "ps", "true"):
        entry(tar, f"bin/{applet}", tarfile.SYMTYPE, 0o777, target="busybox")
    entry(tar, "etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n")
    entry(tar, "etc/group", data=b"root:x:0:\n")


def image(tag, layers):
    descriptors, diff_ids, _ = zip(*layers)
    config = blob(json.dumps({
        "created": "2024-05-01T00:00:00Z", "architecture": ARCH, "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
    }).encode())
    manifest = blob(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"),
        "layers": list(descriptors),
    }).encode())
    return dict(manifest, mediaType="application/vnd.oci.image.manifest.v1+json",
                annotations={"org.opencontainers.image.ref.name": tag})


with open(f"{LAYOUT}/index.json", "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [image("busybox", [layer(busybox)])]}, f)
with open(f"{LAYOUT}/oci-layout", "w") as f:
    f.write('{"imageLayoutVersion": "1.0.0"}')


# --- the registry --------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"docker-registry exited: see {WORK}/registry/registry.log")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    sys.exit(f"nothing listens on 127.0.0.1:{port}")


def stop(proc):
    # Only a process this script started, by pid.
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


port = free_port()
ADDR = f"127.0.0.1:{port}"
os.makedirs(f"{WORK}/registry")
with open(f"{WORK}/registry/config.yml", "w") as f:
    f.write(f"""version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {WORK}/registry/data
http:
  addr: {ADDR}
  secret: podkit-bench
""")
with open(f"{WORK}/registries.conf", "w") as f:
    f.write(f'[[registry]]\nlocation = "{ADDR}"\ninsecure = true\n')
with open(f"{WORK}/registry/registry.log", "w") as log:
    registry = subprocess.Popen(["docker-registry", "serve", f"{WORK}/registry/config.yml"],
                                stdin=DEVNULL, stdout=log, stderr=log)
with open(f"{WORK}/registry.pid", "w") as f:
    f.write(str(registry.pid))

BUSYBOX = f"{ADDR}/bench/busybox:1"
PODMAN_PODS = f"{WORK}/podman/pods"
FLOOR = f"{WORK}/floor"
if RUNTIME == "crun" and HYBRID:
    # As podkit starts crun on a hybrid host: without a cgroup manager, in a mount namespace
    # without the cgroup2 mount (made in the child before exec; the functions are looked up
    # here, before any thread, so the child calls no Python machinery that takes a lock).
    import ctypes
    _libc = ctypes.CDLL(None, use_errno=True)
    _unshare, _mount, _umount2 = _libc.unshare, _libc.mount, _libc.umount2
    _CLONE_NEWNS, _MS_REC, _MS_PRIVATE, _MNT_DETACH = 0x20000, 0x4000, 0x40000, 2
    _ROOT, _UNIFIED = b"/", b"/sys/fs/cgroup/unified"

    def without_unified():
        if _unshare(_CLONE_NEWNS) != 0 or _mount(None, _ROOT, None, _MS_REC | _MS_PRIVATE,
                                                 None) != 0 or _umount2(_UNIFIED, _MNT_DETACH) != 0:
            os._exit(125)
    RUNC = [RUNTIME, "--cgroup-manager=disabled", "--root", f"{RUN}/{RUNTIME}"]
    RUNTIME_SETUP = without_unified
else:
    RUNC = [RUNTIME, "--root", f"{RUN}/{RUNTIME}"]
    RUNTIME_SETUP = None
floor_ids = set()


def in_threads(fn, items):
    errors = []

    def call(item):
        try:
            fn(item)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)
    threads = [threading.Thread(target=call, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def floor_round(name, ordered=False):
    """The runtime alone on the prepared bundles: side by side (create + start each), or
    `ordered` as kubelet starts containers (podkit's order): the first made and started at
    once (`run --detach`) while the others are created, each started once the one before
    it is."""
    ids = [f"{name}-{i}" for i in range(3)]
    pids = {}
    started = [threading.Event() for _ in ids]

    def step(i, cmd):
        cid = ids[i]
        pid_file = f"{FLOOR}/b{i}/pid"
        # The runtime hands its stdio to the container: a file, not a pipe read to its end.
        err = f"{FLOOR}/b{i}/runtime.err"
        if cmd[0] != "start":
            cmd = cmd + ["--bundle", f"{FLOOR}/b{i}", "--pid-file", pid_file, cid]
        else:
            cmd = cmd + [cid]
        with open(err, "w") as errf:
            code = subprocess.run(RUNC + cmd, stdin=DEVNULL, stdout=DEVNULL,
                                  stderr=errf, preexec_fn=RUNTIME_SETUP).returncode
        if code != 0:
            with open(err) as errf:
                raise RuntimeError(f"{RUNTIME} {cmd[0]} {cid}: {errf.read()}")
        if cmd[0] != "start":
            with open(pid_file) as f:
                pids[cid] = int(f.read())

    def up_one(i):
        floor_ids.add(ids[i])
        try:
            if ordered and i == 0:
                step(i, ["run", "--detach"])
            else:
                step(i, ["create"])
                if ordered:
                    started[i - 1].wait()
                step(i, ["start"])
        finally:
            # A failed start passes the turn too (the round fails on its error).
            started[i].set()

    def down_one(i):
        cid = ids[i]
        fd = os.pidfd_open(pids[cid])
        try:
            signal.pidfd_send_signal(fd, signal.SIGTERM)
            if not select.select([fd], [], [], 30)[0]:
                raise RuntimeError(f"{cid} did not stop on SIGTERM")
        finally:
            os.close(fd)
        proc = subprocess.run(RUNC + ["delete", cid], stdin=DEVNULL, capture_output=True,
                              text=True, preexec_fn=RUNTIME_SETUP)
        if proc.returncode != 0:
            raise RuntimeError(f"{RUNTIME} delete {cid}: {proc.stderr}")
        floor_ids.discard(cid)

    settle()
    t0 = time.monotonic()
    in_threads(up_one, range(3))
    up = time.monotonic() - t0
    settle()
    t0 = time.monotonic()
    in_threads(down_one, range(3))
    down = time.monotonic() - t0
    return up, down



PODMAN_RUNS = {PODMAN_PODS: "pp"}


def podman(where):
    # A short path: podman refuses a runroot of more than 50 characters.
    run = f"{RUN}/{PODMAN_RUNS.setdefault(where, f'm{len(PODMAN_RUNS)}')}"
    return ["podman", "--root", f"{where}/root", "--runroot", f"{run}/run",
            "--tmpdir", f"{run}/tmp"]


def podman_processes(where):
    """podman and conmon processes of this store alive (not zombies): podman's `container
    cleanup` goes on after `kube down` returned."""
    count = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                comm, rest = f.read().rsplit(") ", 1)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if comm.rsplit("(", 1)[-1] in ("podman", "conmon") and not rest.startswith("Z") \
                and where.encode() in cmdline:
            count += 1
    return count


def unmount_under(d):
    """Unmounts what is mounted below d, deepest first."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(d + "/")), reverse=True):
        run(["umount", point])


# podman 4.3 with cgroupfs on this hybrid host leaves each pod's cgroups (empty) in the
# name=systemd and cgroup2 hierarchies, under libpod_parent: removed after each round, and
# libpod_parent too when this run made it.
PODMAN_PARENTS = set(glob.glob("/sys/fs/cgroup/*/libpod_parent"))
podman_pod_ids = set()


def podman_cgroups():
    return [p for i in podman_pod_ids for p in glob.glob(f"/sys/fs/cgroup/*/libpod_parent/{i}")]


def remove_cgroups(tops):
    """Empty cgroups below and at tops, deepest first (a cgroup with processes stays)."""
    for top in tops:
        for d, _, _ in os.walk(top, topdown=False):
            try:
                os.rmdir(d)
            except OSError:
                pass


def wait_podman(where):
    deadline = time.monotonic() + 60
    while podman_processes(where) and time.monotonic() < deadline:
        time.sleep(0.02)


ANNOTATIONS = ", annotations: {podkit.io/network: none}" if NETWORK == "none" else ""


def manifest(name):
    path = f"{WORK}/{name}.yaml"
    with open(path, "w") as f:
        f.write(f"""apiVersion: v1
kind: ConfigMap
metadata: {{name: {name}-config}}
data: {{greeting: hello}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}{ANNOTATIONS}}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: app
        image: {BUSYBOX}
        imagePullPolicy: IfNotPresent
        command: [/bin/sh, -c, "{MEMBER}"]
        env:
        - name: GREETING
          valueFrom: {{configMapKeyRef: {{name: {name}-config, key: greeting}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80, targetPort: 8080}}]
""")
    return path


def podkit_ready(name):
    """How many pods of the Deployment `name` are Ready, from their status files."""
    ready = 0
    for d in glob.glob(f"{RUN}/podkit/pods/default_{name}-*/"):
        try:
            with open(f"{d}status.json") as f:
                status = json.load(f)
        except (OSError, ValueError):
            continue
        if any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions", [])):
            ready += 1
    return ready


podkit_files = set()
podman_files = set()


def podkit_round(name):
    file = manifest(name)
    settle()
    podkit_files.add(file)
    t0 = time.monotonic()
    run([PODKIT, "apply", "-f", file], PODKIT_ENV)
    deadline = t0 + 60
    while podkit_ready(name) < 3:
        if time.monotonic() > deadline:
            sys.exit(f"podkit: the pods of {name} were not Ready after 60 s")
        time.sleep(0.002)
    up = time.monotonic() - t0
    settle()
    down, _ = timed([PODKIT, "delete", "-f", file], PODKIT_ENV)
    podkit_files.discard(file)
    left = glob.glob(f"{RUN}/podkit/pods/default_{name}-*") + glob.glob(
        f"{RUN}/podkit/controllers/default/deployment/{name}")
    if left:
        sys.exit(f"podkit delete -f left {left}")
    os.remove(file)
    return up, down


def podman_round(name):
    file = manifest(name)
    settle()
    podman_files.add(file)
    up, log = timed(podman(PODMAN_PODS) + ["kube", "play", *PODMAN_NETWORK, file])
    with open(log) as f:
        text = f.read()
    words = text.split()
    if "Pod:" in words:
        podman_pod_ids.add(words[words.index("Pod:") + 1])
    running = subprocess.run(podman(PODMAN_PODS) + ["ps", "-q", "--filter", "status=running"],
                             stdin=DEVNULL, env=ENV, capture_output=True, text=True).stdout
    pods = subprocess.run(podman(PODMAN_PODS) + ["pod", "ps", "-q"], stdin=DEVNULL, env=ENV,
                          capture_output=True, text=True).stdout.split()
    apps = len(running.split()) - len(pods)  # each pod has an infra container
    if not pods or apps < len(pods):
        sys.exit(f"podman kube play returned with {len(running.split())} containers running:\n{text}")
    settle()
    down, _ = timed(podman(PODMAN_PODS) + ["kube", "down", file])
    podman_files.discard(file)
    wait_podman(PODMAN_PODS)
    remove_cgroups(podman_cgroups())
    os.remove(file)
    return up, down, len(pods)


try:
    wait_port(port, registry)
    run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{LAYOUT}:busybox",
         f"docker://{BUSYBOX}"])
    run([PODKIT, "pull", BUSYBOX], env=PODKIT_ENV)
    if PODMAN:
        os.makedirs(PODMAN_PODS)
        run(podman(PODMAN_PODS) + ["pull", "--tls-verify=false", BUSYBOX])
    # The floor's bundles: the busybox image unpacked by umoci, a config for the runtime alone.
    os.makedirs(f"{RUN}/{RUNTIME}")
    for i in range(3):
        bundle = f"{FLOOR}/b{i}"
        run(["umoci", "unpack", "--image", f"{LAYOUT}:busybox", bundle])
        with open(f"{bundle}/config.json") as f:
            config = json.load(f)
        config["process"]["args"] = ["/bin/sh", "-c", MEMBER]
        config["process"]["terminal"] = False
        config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"]
                                         if ns["type"] != "network"]
        with open(f"{bundle}/config.json", "w") as f:
            json.dump(config, f)
    tools = ["podkit", "floor"] + (["podman"] if PODMAN else [])
    times = {t: ([], []) for t in tools}
    podman_replicas = 0
    for r in range(ROUNDS + 1):  # round 0: warm-up (podman builds its pause image)
        order = tools[r % len(tools):] + tools[:r % len(tools)]
        for tool in order:
            name = f"wb{os.getpid()}r{r}"
            if tool == "podkit":
                up, down = podkit_round(name)
            elif tool == "floor":
                up, down = floor_round(name)
            else:
                up, down, podman_replicas = podman_round(name)
            if r > 0:
                times[tool][0].append(up)
                times[tool][1].append(down)
        print(f"round {r}{' (warm-up)' if r == 0 else ''} done", file=sys.stderr)
finally:
    for file in podkit_files:
        subprocess.run([PODKIT, "delete", "-f", file, "--force"], stdin=DEVNULL,
                       stdout=DEVNULL, env=PODKIT_ENV)
    for file in podman_files:
        subprocess.run(podman(PODMAN_PODS) + ["kube", "down", file], stdin=DEVNULL,
                       stdout=DEVNULL, env=ENV)
    for cid in floor_ids:
        subprocess.run(RUNC + ["delete", "-f", cid], stdin=DEVNULL, stdout=DEVNULL,
                       preexec_fn=RUNTIME_SETUP)
    if PODMAN:
        wait_podman(PODMAN_PODS)
        remove_cgroups(podman_cgroups())
        remove_cgroups(set(glob.glob("/sys/fs/cgroup/*/libpod_parent")) - PODMAN_PARENTS)
    stop(registry)
    os.remove(f"{WORK}/registry.pid")


def median(xs):
    return statistics.median(xs)


def p90(xs):
    xs = sorted(xs)
    return xs[round((len(xs) - 1) * 0.9)]


def ratio(a, b):
    return f"{a / b:.2f}x"


print()
with open("/proc/loadavg") as f:
    load = f.read().split()[0]
print(f"a ConfigMap, a 3-replica Deployment (busybox) and a Service; {ROUNDS} rounds "
      f"interleaved after a warm-up round; pod network: {NETWORK}; runtime: {RUNTIME} for "
      f"podkit and the floor" + (f", {PODMAN_RUNTIME} for podman" if PODMAN else "")
      + (" (crun refuses this hybrid cgroup host under podman)"
         if PODMAN and PODMAN_RUNTIME != RUNTIME else "") + f"; load average {load}")
print()
ms = lambda s: s * 1000
up = {t: median(times[t][0]) for t in tools}
down = {t: median(times[t][1]) for t in tools}
head = (f"| whole file | podkit apply / delete -f (3 pods) | {RUNTIME} create+start / kill+delete "
        "of the 3 containers (floor) |")
sep = "|---|---|---|"
if PODMAN:
    head += f" podman kube play / down ({podman_replicas} pods) |"
    sep += "---|"
head += " podkit / floor |"
sep += "---|"
if PODMAN:
    head += " podman / podkit | podman / floor |"
    sep += "---|---|"
print(head)
print(sep)
for what, col, i in (("up: all pods Ready", up, 0), ("down: everything deleted", down, 1)):
    row = f"| {what}, median (p90) | " + " | ".join(
        f"{ms(col[t]):.1f} ms ({ms(p90(times[t][i])):.1f})" for t in tools) + " |"
    row += f" {ratio(col['podkit'], col['floor'])} |"
    if PODMAN:
        row += f" {ratio(col['podman'], col['podkit'])} | {ratio(col['podman'], col['floor'])} |"
    print(row)
print()
if PODMAN:
    targets = [("up >= 10x faster than podman", up["podman"] >= 10 * up["podkit"]),
               ("down >= 10x faster than podman", down["podman"] >= 10 * down["podkit"])]
    print("targets: " + "; ".join(f"{w}: {'met' if ok else 'NOT met'}" for w, ok in targets))
PY
