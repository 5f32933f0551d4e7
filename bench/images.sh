#!/usr/bin/env bash
# Benchmark: podkit's image store and image pods against their peers, side by side in one run.
#
# Measures, as root, with everything (registry, image stores, state roots, runc state) in a temp
# dir of its own, and the state roots (podkit's pods, runc's containers, podman's runroot and
# tmpdir) on a tmpfs mounted in it, as each tool's default (/run) is a tmpfs on most hosts (not
# on this test machine, whose /run is on its ext4 root: there every file a tool makes and removes
# costs it more, most of all podkit's supervisor and runc, which make dozens a pod):
#   1. pull + unpack of a 5-layer image (a busybox-static layer and 4 layers of random,
#      incompressible files, gzip; about --size MiB of blobs) built here as an OCI layout and
#      pushed by skopeo to Debian's `docker-registry` on 127.0.0.1 (plain http, a free port):
#      `podkit pull` (a fresh PODKIT_STORAGE, the registry marked insecure in a registries.conf
#      of its own) against `skopeo copy docker://... oci:DIR:big` + `umoci unpack` (the sum), and
#      against `podman pull` into a fresh --root/--runroot. Each round into fresh empty
#      directories, the tools in rotating order, `sync` before each; wall time (median) and peak
#      RSS (GNU time's %M, the largest of the rounds; for skopeo + umoci the larger step's);
#   2. a 3-container pod up and down, each container the busybox image (already in each tool's
#      store) running `sleep 1000` under a shell that exits on SIGTERM (a bare `sleep` as a
#      container's PID 1 ignores SIGTERM, so every down would wait out the grace period):
#      `podkit apply -f` (returns once every container runs: it re-reads the pod's status when
#      inotify says it changed) and `podkit delete pod NAME` (returns once everything is removed: it polls every
#      20 ms), as a user runs them, against `podman kube play` / `podman kube down` of
#      the same manifest (runc, cgroupfs; podman's cleanup processes after `kube down` returned
#      are waited out unmeasured), and the floor: the runtime alone on three prepared bundles
#      (`umoci unpack` of the same image; pid, mount, IPC and UTS namespaces, no network one),
#      up = `runc create` + `runc start` for each, the three side by side; and the ordered
#      floor: the same bundles in kubelet's order, as podkit starts them (the first by `runc run
#      --detach` while the other two are created, each of those started once the one before it
#      is); down = SIGTERM to each container's pid (as podkit signals), its exit, `runc
#      delete`. Each timed step after `sync` and an idle spell (--idle MS), rounds interleaved,
#      medians (p90);
#   3. the supervisor's memory with that pod running: VmRSS and RssAnon of the pid in
#      $PODKIT_ROOT/pods/NAME/supervisor.pid, read just before each delete.
# Prints tables with ratios, and the issue's targets: pull faster than both peers with peak RSS
# <= 50 MiB; pod up >= 5x faster than podman and within 1.5x of the floor; supervisor <= 6 MiB.
#
# Needs: root, python3, docker-registry, skopeo, umoci, runc, busybox-static (/bin/busybox), GNU
# time (/usr/bin/time); podman (4.3 from Debian) for its columns: used when installed, or with
# --podman, which installs and configures it with ../shared/bench/podman-setup.sh. podman runs
# with a containers.conf of this script's (CONTAINERS_CONF: runc, cgroupfs, ulimits this machine
# allows, events to a file, network configs in the temp dir) and --root/--runroot/--tmpdir in
# the temp dir. Pods are on each tool's pod network (--network pod, the default: podkit's
# bridge; podman's, netavark's bridge with its firewall rules), or on their loopback only in
# both (--network none: `podkit.io/network: none`, `podman kube play --network none`).
# Traffic goes only to 127.0.0.1.
# Every process started is ended by pid; the temp dir, the pods, their mounts and the runc state
# are removed on exit, also when the run fails.
#
# Without PODKIT_BIN, builds podkit and podkit-supervise (static) in release mode (fat LTO:
# slow).
#
# Usage: sudo [PODKIT_BIN=path/to/podkit] bench/images.sh [--size MIB] [--rounds N]
#             [--pod-rounds N] [--idle MS] [--podman | --no-podman]
#        (defaults: --size 100 --rounds 5 --pod-rounds 10 --idle 1000; podkit-supervise is
#        taken from beside PODKIT_BIN, as podkit itself finds it)
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=100
ROUNDS=5
POD_ROUNDS=10
IDLE_MS=1000
NETWORK=pod
PODMAN=auto
usage="usage: $0 [--size MIB] [--rounds N] [--pod-rounds N] [--idle MS] [--network pod|none] [--podman | --no-podman]"
while [ $# -gt 0 ]; do
    case "$1" in
        --size) SIZE="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --pod-rounds) POD_ROUNDS="$2"; shift 2 ;;
        --idle) IDLE_MS="$2"; shift 2 ;;
        --network) NETWORK="$2"; shift 2 ;;
        --podman) PODMAN=yes; shift ;;
        --no-podman) PODMAN=no; shift ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
done
case "$NETWORK" in pod|none) ;; *) echo "$usage" >&2; exit 2 ;; esac
for n in "$SIZE" "$ROUNDS" "$POD_ROUNDS" "$IDLE_MS"; do
    [[ "$n" =~ ^[0-9]+$ ]] || { echo "$usage" >&2; exit 2; }
done
[ "$SIZE" -ge 4 ] && [ "$ROUNDS" -ge 1 ] && [ "$POD_ROUNDS" -ge 1 ] \
    || { echo "bench/images.sh: --size >= 4, --rounds and --pod-rounds >= 1" >&2; exit 2; }
[ "$(id -u)" = 0 ] \
    || { echo "bench/images.sh: run as root (unpacking, mounts, namespaces)" >&2; exit 1; }
for tool in python3 docker-registry skopeo umoci runc /bin/busybox /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench/images.sh: missing $tool" >&2; exit 1; }
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

# The release profile is fat LTO: slow to build, so PODKIT_BIN names a binary built already.
# Both binaries are linked statically at a fixed address, as README's install step builds them
# (bench/pod.sh links the supervisor so too).
if [ -z "${PODKIT_BIN:-}" ]; then
    cargo rustc -q --release --bin podkit -- -C target-feature=+crt-static -C relocation-model=static
    cargo rustc -q --release --bin podkit-supervise -- -C target-feature=+crt-static -C relocation-model=static
    PODKIT_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/podkit"
fi
[ -x "$PODKIT_BIN" ] || { echo "bench/images.sh: missing $PODKIT_BIN" >&2; exit 1; }
PODKIT_BIN="$(realpath "$PODKIT_BIN")"

work="$(mktemp -d /tmp/podkit-bench-images.XXXXXX)"
# iptables tables before podman runs: netavark leaves its chains (and the tables) behind.
. bench/netavark.sh
tables_before="$(tables_now)"
# The driver ends what it started, also when it fails; this is for a driver that was killed.
cleanup() {
    set +e
    local d pid key
    if [ -d "$work/run/podkit/pods" ]; then
        for d in "$work"/run/podkit/pods/*/; do
            [ -d "$d" ] || continue
            key="$(basename "$d")"  # <namespace>_<name>
            PODKIT_ROOT="$work/run/podkit" PODKIT_STORAGE="$work/podkit/storage" \
                "$PODKIT_BIN" delete pod "${key#*_}" -n "${key%%_*}" --force >/dev/null 2>&1
        done
        PODKIT_ROOT="$work/run/podkit" "$PODKIT_BIN" gc >/dev/null 2>&1
    fi
    if [ -d "$work/run/runc" ]; then
        for d in $(runc --root "$work/run/runc" list -q 2>/dev/null); do
            runc --root "$work/run/runc" delete -f "$d" >/dev/null 2>&1
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

PODKIT="$PODKIT_BIN" WORK="$work" SIZE="$SIZE" ROUNDS="$ROUNDS" POD_ROUNDS="$POD_ROUNDS" \
IDLE_MS="$IDLE_MS" NETWORK="$NETWORK" PODMAN="$PODMAN" NOFILE="$(ulimit -Hn)" python3 - <<'PY'
import glob, gzip, hashlib, io, json, os, select, shutil, signal, socket, statistics
import subprocess, sys, tarfile, threading, time

PODKIT = os.environ["PODKIT"]
WORK = os.environ["WORK"]
SIZE = int(os.environ["SIZE"])
ROUNDS = int(os.environ["ROUNDS"])
POD_ROUNDS = int(os.environ["POD_ROUNDS"])
IDLE = int(os.environ["IDLE_MS"]) / 1000
# pod: each tool's own pod network (podkit's bridge, podman's netavark bridge); none: loopback
# only in both (`podkit.io/network: none`, `podman kube play --network none`).
NETWORK = os.environ["NETWORK"]
PODMAN_NETWORK = ["--network", "none"] if NETWORK == "none" else []
PODMAN = os.environ["PODMAN"] == "yes"
MIB = 1 << 20
DEVNULL = subprocess.DEVNULL
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}[os.uname().machine]
# A container's command: `sleep 1000`, ended by SIGTERM (the shell's `wait` returns on a trapped
# signal; the container's PID 1 exiting ends the sleep).
MEMBER = "trap 'exit 0' TERM; sleep 1000 & wait"

os.makedirs(f"{WORK}/logs")
os.makedirs(f"{WORK}/tmp")
ENV = dict(os.environ)
for key in ("PODKIT", "WORK", "SIZE", "ROUNDS", "POD_ROUNDS", "IDLE_MS", "NETWORK", "PODMAN", "NOFILE"):
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
PODKIT_ENV = dict(ENV, PODKIT_ROOT=f"{RUN}/podkit", PODKIT_STORAGE=f"{WORK}/podkit/storage")
with open(f"{WORK}/containers.conf", "w") as f:
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


# --- the images, built as an OCI layout -------------------------------------------------------

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


def random_files(n, total):
    """Layer n of the big image: 64 files of 4 KiB, then 1 MiB files up to `total` bytes."""
    def add(tar):
        entry(tar, f"data{n}", tarfile.DIRTYPE, 0o755)
        entry(tar, f"data{n}/small", tarfile.DIRTYPE, 0o755)
        for i in range(64):
            entry(tar, f"data{n}/small/s{i:02d}", data=os.urandom(4096))
        left, i = total - 64 * 4096, 0
        while left > 0:
            entry(tar, f"data{n}/f{i:03d}.bin", data=os.urandom(min(MIB, left)))
            left -= MIB
            i += 1
    return add


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


def tree_bytes(*roots):
    """Bytes of the regular files under roots (symlinks not followed)."""
    total = 0
    for root in roots:
        for d, _, files in os.walk(root):
            for name in files:
                st = os.lstat(os.path.join(d, name))
                if (st.st_mode & 0o170000) == 0o100000:
                    total += st.st_size
    return total


base = layer(busybox)
rest = max(SIZE * MIB - base[0]["size"], 4 * MIB)
big_layers = [base] + [layer(random_files(n, rest // 4)) for n in range(1, 5)]
big_bytes = sum(d["size"] for d, _, _ in big_layers)
big_unpacked = sum(n for _, _, n in big_layers)  # bytes of regular files: no path repeats
with open(f"{LAYOUT}/index.json", "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [image("big", big_layers),
                                                  image("busybox", [base])]}, f)
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

BIG = f"{ADDR}/bench/big:1"
BUSYBOX = f"{ADDR}/bench/busybox:1"
PODMAN_PODS = f"{WORK}/podman/pods"
FLOOR = f"{WORK}/floor"
RUNC = ["runc", "--root", f"{RUN}/runc"]


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


# What the finally block must end.
podkit_pods = set()
podman_files = set()
floor_ids = set()

try:
    wait_port(port, registry)
    for tag, ref in (("big", BIG), ("busybox", BUSYBOX)):
        run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{LAYOUT}:{tag}", f"docker://{ref}"])

    # --- 1. pull + unpack ----------------------------------------------------------------------
    pull_dir = f"{WORK}/pull"

    def pull(tool, r):
        """(wall seconds, peak RSS KiB) of one pull into fresh directories, checked, removed."""
        d = f"{pull_dir}/{tool}-{r}"
        os.makedirs(d)
        env = dict(PODKIT_ENV, PODKIT_STORAGE=f"{d}/storage") if tool == "podkit" else ENV
        steps = {
            "podkit": [[PODKIT, "pull", BIG]],
            "skopeo": [["skopeo", "copy", "--src-tls-verify=false", f"docker://{BIG}",
                        f"oci:{d}/layout:big"],
                       ["umoci", "unpack", "--image", f"{d}/layout:big", f"{d}/bundle"]],
            "podman": [podman(d) + ["pull", "--tls-verify=false", BIG]],
        }[tool]
        settle()
        rss = 0
        t0 = time.monotonic()
        for cmd in steps:
            run(["/usr/bin/time", "-f", "%M", "-o", f"{d}/rss"] + cmd, env)
            with open(f"{d}/rss") as f:
                rss = max(rss, int(f.read().split()[-1]))
        wall = time.monotonic() - t0
        where = {"podkit": [f"{d}/storage/images/layers"], "skopeo": [f"{d}/bundle/rootfs"],
                 "podman": glob.glob(f"{d}/root/overlay/*/diff")}[tool]
        got = tree_bytes(*where)
        if tool == "podman":
            out = subprocess.run(podman(d) + ["images", "-q"], stdin=DEVNULL, env=ENV,
                                 capture_output=True, text=True, check=True).stdout.split()
            assert len(out) == 1, f"podman images: {out}"
        if got != big_unpacked:
            sys.exit(f"{tool}: {got} bytes of files unpacked, expected {big_unpacked} ({d})")
        unmount_under(d)  # podman's overlay driver may leave its home mounted
        shutil.rmtree(d)
        return wall, rss

    pull_tools = ["podkit", "skopeo"] + (["podman"] if PODMAN else [])
    pulls = {t: [] for t in pull_tools}
    for r in range(ROUNDS + 1):  # round 0: warm-up (page cache, binaries), not counted
        order = pull_tools[r % len(pull_tools):] + pull_tools[:r % len(pull_tools)]
        for tool in order:
            result = pull(tool, r)
            if r > 0:
                pulls[tool].append(result)
        print(f"pull round {r}{' (warm-up)' if r == 0 else ''} done", file=sys.stderr)

    # --- 2. pods up and down -------------------------------------------------------------------
    run([PODKIT, "pull", BUSYBOX], env=PODKIT_ENV)
    if PODMAN:
        os.makedirs(PODMAN_PODS)
        run(podman(PODMAN_PODS) + ["pull", "--tls-verify=false", BUSYBOX])
    # The floor's bundles: the busybox image unpacked by umoci, a config for runc alone.
    os.makedirs(f"{RUN}/runc")
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

    def manifest(name):
        member = lambda c: (f"  - name: {c}\n    image: {BUSYBOX}\n"
                            f"    imagePullPolicy: IfNotPresent\n"
                            f"    command: [/bin/sh, -c, \"{MEMBER}\"]\n")
        path = f"{WORK}/{name}.yaml"
        with open(path, "w") as f:
            f.write(f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n"
                    + ("  annotations: {podkit.io/network: none}\n" if NETWORK == "none" else "")
                    + "spec:\n"
                    f"  terminationGracePeriodSeconds: 10\n  containers:\n"
                    + "".join(member(c) for c in "abc"))
        return path

    def status_running(name):
        with open(f"{RUN}/podkit/pods/default_{name}/status.json") as f:
            status = json.load(f)
        return sum(1 for c in status.get("containerStatuses", [])
                   if "running" in (c.get("state") or {}))

    def supervisor_memory(name):
        with open(f"{RUN}/podkit/pods/default_{name}/supervisor.pid") as f:
            pid = int(f.read().strip())
        fields = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon"):
                    fields[key] = int(value.split()[0])
        return fields["VmRSS"], fields["RssAnon"]

    def podkit_round(name):
        file = manifest(name)
        settle()
        podkit_pods.add(name)
        up, _ = timed([PODKIT, "apply", "-f", file], PODKIT_ENV)
        running = status_running(name)
        if running != 3:
            sys.exit(f"podkit apply returned with {running} of 3 containers running")
        settle()
        memory = supervisor_memory(name)
        down, _ = timed([PODKIT, "delete", "pod", name], PODKIT_ENV)
        podkit_pods.discard(name)
        if os.path.exists(f"{RUN}/podkit/pods/default_{name}"):
            sys.exit(f"pod {name}: its directory is left after podkit delete")
        os.remove(file)
        return up, down, memory

    def podman_round(name):
        file = manifest(name)
        settle()
        podman_files.add(file)
        up, log = timed(podman(PODMAN_PODS) + ["kube", "play", *PODMAN_NETWORK, file])
        with open(log) as f:
            lines = f.read().split()
        if "Pod:" in lines:
            podman_pod_ids.add(lines[lines.index("Pod:") + 1])
        running = subprocess.run(podman(PODMAN_PODS) + ["ps", "-q", "--filter", f"pod={name}",
                                                        "--filter", "status=running"],
                                 stdin=DEVNULL, env=ENV, capture_output=True, text=True).stdout
        if len(running.split()) < 4:  # the pod's infra container and the three
            sys.exit(f"podman kube play returned with {len(running.split())} containers running")
        settle()
        down, _ = timed(podman(PODMAN_PODS) + ["kube", "down", file])
        podman_files.discard(file)
        wait_podman(PODMAN_PODS)
        remove_cgroups(podman_cgroups())
        os.remove(file)
        return up, down

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
            # runc hands its stdio to the container: a file, not a pipe read to its end.
            err = f"{FLOOR}/b{i}/runc.err"
            if cmd[0] != "start":
                cmd = cmd + ["--bundle", f"{FLOOR}/b{i}", "--pid-file", pid_file, cid]
            else:
                cmd = cmd + [cid]
            with open(err, "w") as errf:
                code = subprocess.run(RUNC + cmd, stdin=DEVNULL, stdout=DEVNULL,
                                      stderr=errf).returncode
            if code != 0:
                with open(err) as errf:
                    raise RuntimeError(f"runc {cmd[0]} {cid}: {errf.read()}")
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
                                  text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"runc delete {cid}: {proc.stderr}")
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

    pod_tools = ["podkit", "floor", "ordered"] + (["podman"] if PODMAN else [])
    pods = {t: ([], []) for t in pod_tools}
    memory = []
    for r in range(POD_ROUNDS + 1):  # round 0: warm-up (podman builds its pause image)
        order = pod_tools[r % len(pod_tools):] + pod_tools[:r % len(pod_tools)]
        for tool in order:
            name = f"pkb{os.getpid()}-{r}"
            if tool == "podkit":
                up, down, mem = podkit_round(name)
                if r > 0:
                    memory.append(mem)
            elif tool == "podman":
                up, down = podman_round(name)
            else:
                up, down = floor_round(name, ordered=tool == "ordered")
            if r > 0:
                pods[tool][0].append(up)
                pods[tool][1].append(down)
        print(f"pod round {r}{' (warm-up)' if r == 0 else ''} done", file=sys.stderr)
finally:
    # Whatever a failure left running, ended; then the registry.
    for name in podkit_pods:
        subprocess.run([PODKIT, "delete", "pod", name, "--force"], stdin=DEVNULL,
                       stdout=DEVNULL, env=PODKIT_ENV)
    for file in podman_files:
        subprocess.run(podman(PODMAN_PODS) + ["kube", "down", file], stdin=DEVNULL,
                       stdout=DEVNULL, env=ENV)
    for cid in floor_ids:
        subprocess.run(RUNC + ["delete", "-f", cid], stdin=DEVNULL, stdout=DEVNULL)
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
print(f"image: {len(big_layers)} gzip layers, {big_bytes / MIB:.1f} MiB of blobs, "
      f"{big_unpacked / MIB:.1f} MiB of files; {ROUNDS} pull rounds and {POD_ROUNDS} pod rounds "
      f"interleaved (after a warm-up round each); pod network: {NETWORK}; load average {load}")
print()
wall = {t: median([w for w, _ in pulls[t]]) for t in pull_tools}
rss = {t: max(k for _, k in pulls[t]) / 1024 for t in pull_tools}
head = "| pull + unpack | podkit pull | skopeo copy + umoci unpack |"
sep = "|---|---|---|"
if PODMAN:
    head += " podman pull |"
    sep += "---|"
head += " skopeo+umoci / podkit |"
sep += "---|"
if PODMAN:
    head += " podman / podkit |"
    sep += "---|"
print(head)
print(sep)
row = f"| wall time, median (p90) | " + " | ".join(
    f"{wall[t]:.2f} s ({p90([w for w, _ in pulls[t]]):.2f})" for t in pull_tools)
row += f" | {ratio(wall['skopeo'], wall['podkit'])} |"
if PODMAN:
    row += f" {ratio(wall['podman'], wall['podkit'])} |"
print(row)
row = f"| peak RSS, max of rounds | " + " | ".join(
    f"{rss[t]:.1f} MiB" + (" (larger step)" if t == "skopeo" else "") for t in pull_tools)
row += f" | {ratio(rss['skopeo'], rss['podkit'])} |"
if PODMAN:
    row += f" {ratio(rss['podman'], rss['podkit'])} |"
print(row)
print()
ms = lambda s: s * 1000
up = {t: median(pods[t][0]) for t in pod_tools}
down = {t: median(pods[t][1]) for t in pod_tools}
head = ("| 3-container pod | podkit apply / delete | runc create+start / kill+delete (floor) |"
        " runc in kubelet's order (ordered floor) |")
sep = "|---|---|---|---|"
if PODMAN:
    head += " podman kube play / down |"
    sep += "---|"
head += " podkit / floor | podkit / ordered floor |"
sep += "---|---|"
if PODMAN:
    head += " podman / podkit |"
    sep += "---|"
print(head)
print(sep)
for what, col, i in (("up", up, 0), ("down", down, 1)):
    row = f"| {what}, median (p90) | " + " | ".join(
        f"{ms(col[t]):.1f} ms ({ms(p90(pods[t][i])):.1f})" for t in pod_tools)
    row += f" | {ratio(col['podkit'], col['floor'])} | {ratio(col['podkit'], col['ordered'])} |"
    if PODMAN:
        row += f" {ratio(col['podman'], col['podkit'])} |"
    print(row)
print()
vm = [v for v, _ in memory]
anon = [a for _, a in memory]
print(f"podkit supervisor with the pod running: VmRSS median {median(vm) / 1024:.2f} MiB "
      f"(max {max(vm) / 1024:.2f}), RssAnon median {median(anon) / 1024:.2f} MiB "
      f"(max {max(anon) / 1024:.2f})")
print()
targets = [
    ("pull faster than skopeo + umoci", wall["podkit"] < wall["skopeo"]),
    ("pull peak RSS <= 50 MiB", rss["podkit"] <= 50),
    ("pod up within 1.5x of the floor", up["podkit"] <= 1.5 * up["floor"]),
    ("supervisor VmRSS <= 6 MiB", median(vm) <= 6 * 1024),
]
if PODMAN:
    targets[1:1] = [("pull faster than podman", wall["podkit"] < wall["podman"])]
    targets.append(("pod up >= 5x faster than podman", up["podman"] >= 5 * up["podkit"]))
print("targets: " + "; ".join(f"{what}: {'met' if ok else 'NOT met'}" for what, ok in targets))
PY
