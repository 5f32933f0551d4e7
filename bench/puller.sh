#!/usr/bin/env bash
# Benchmark: `podkit puller` (the podkit-puller binary) against the shell script a user would
# write instead: `curl` the archive, `tar -xzf` it into a new directory, swap a symlink with `mv`.
#
# Measures, on one .tar.gz generated here (random, incompressible files plus compressible text,
# about --size MiB compressed) served from 127.0.0.1 by `python3 -m http.server`:
#   1. time to publish it (start to `current` pointing at the unpacked tree), median of --rounds,
#      both tools interleaved, each into a fresh directory;
#   2. peak RSS (GNU time's "Maximum resident set size"; for the script, its largest process:
#      curl, tar or gzip);
#   3. bytes on the wire per idle poll (the archive unchanged), counted by a relay on 127.0.0.1
#      in front of the server: podkit's conditional GET (304), curl re-downloading, and
#      `curl -R -z FILE` (what a careful user writes: If-Modified-Since from the file's mtime).
# Prints a table with ratios. Needs: python3, curl, tar, gzip, GNU time (/usr/bin/time, Debian
# package time). Files live in a temp dir removed on exit; the only processes started are the
# server, the relay and the tools, each ended by pid.
#
# Usage: [PODKIT_PULLER=path/to/podkit-puller] bench/puller.sh [--size MIB] [--rounds N] [--polls N]
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=100
ROUNDS=3
POLLS=5
while [ $# -gt 0 ]; do
    case "$1" in
        --size) SIZE="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --polls) POLLS="$2"; shift 2 ;;
        *) echo "usage: $0 [--size MIB] [--rounds N] [--polls N]" >&2; exit 2 ;;
    esac
done
for tool in python3 curl tar gzip /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

# The release profile is fat LTO: slow to build, so it is built once and reused; PODKIT_PULLER
# names an already built binary and skips the build.
if [ -z "${PODKIT_PULLER:-}" ]; then
    target="${CARGO_TARGET_DIR:-target}"
    cargo build --release -q -p sidecars --bin podkit-puller
    PODKIT_PULLER="$target/release/podkit-puller"
fi
[ -x "$PODKIT_PULLER" ] || { echo "missing $PODKIT_PULLER" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

PODKIT_PULLER="$PODKIT_PULLER" WORK="$work" SIZE="$SIZE" ROUNDS="$ROUNDS" POLLS="$POLLS" python3 - <<'PY'
import os, re, shutil, socket, statistics, subprocess, sys, threading, time

PODKIT = os.environ["PODKIT_PULLER"]
WORK = os.environ["WORK"]
SIZE = int(os.environ["SIZE"])
ROUNDS = int(os.environ["ROUNDS"])
POLLS = int(os.environ["POLLS"])
MIB = 1 << 20


def make_archive():
    """~90% of SIZE as random files, plus text that gzip shrinks about 8x to ~10% of SIZE."""
    src = os.path.join(WORK, "src")
    os.makedirs(os.path.join(src, "blobs"))
    os.makedirs(os.path.join(src, "text"))
    rand_total = SIZE * MIB * 9 // 10
    n = max(1, rand_total // (4 * MIB))
    for i in range(n):
        with open(os.path.join(src, "blobs", f"b{i:04d}.bin"), "wb") as f:
            f.write(os.urandom(rand_total // n))
    text_total = SIZE * MIB * 8 // 10
    line_no = 0
    for i in range(max(1, text_total // (2 * MIB))):
        with open(os.path.join(src, "text", f"t{i:04d}.log"), "w") as f:
            written = 0
            while written < 2 * MIB:
                line = (f"2026-01-01T00:00:{line_no % 60:02d}Z INFO request id={line_no:09d} "
                        f"path=/api/v1/items/{line_no % 977} status=200 bytes={line_no % 4096}\n")
                f.write(line)
                written += len(line)
                line_no += 1
    www = os.path.join(WORK, "www")
    os.makedirs(www)
    archive = os.path.join(www, "site.tar.gz")
    subprocess.run(["tar", "-czf", archive, "-C", src, "."], check=True)
    files = sum(len(fs) for _, _, fs in os.walk(src))
    unpacked = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(src) for f in fs)
    shutil.rmtree(src)
    return www, os.path.getsize(archive), files, unpacked


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
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


class Relay:
    """A TCP relay on 127.0.0.1 counting the bytes of every connection, both directions."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.bytes = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    def pump(self, src, dst):
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                with self.lock:
                    self.bytes += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take(self):
        with self.lock:
            n, self.bytes = self.bytes, 0
        return n


SCRIPT = r'''
set -euo pipefail
url="$1"; dest="$2"
new="$dest/.versions/$(date +%s%N)"
mkdir -p "$new" "$dest/.tmp"
curl -fsS -o "$dest/.tmp/site.tar.gz" "$url"
tar -xzf "$dest/.tmp/site.tar.gz" -C "$new"
rm "$dest/.tmp/site.tar.gz"
ln -sfn "$new" "$dest/.current.tmp"
mv -T "$dest/.current.tmp" "$dest/current"
'''


def timed(cmd):
    """Wall seconds and peak RSS (KiB) of cmd under GNU time."""
    t0 = time.monotonic()
    out = subprocess.run(["/usr/bin/time", "-v"] + cmd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, env=dict(os.environ, PODKIT_LOG="warn"))
    wall = time.monotonic() - t0
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{out.stderr}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1))
    return wall, rss


def publish(tool, url, dest):
    if tool == "podkit":
        return timed([PODKIT, "--url", url, "--dest", dest, "--one-time"])
    return timed(["bash", "-c", SCRIPT, "bash", url, dest])


def check(dest, files):
    n = sum(len(fs) for _, _, fs in os.walk(os.path.join(dest, "current") + "/"))
    if n != files:
        sys.exit(f"{dest}/current holds {n} files, expected {files}")


www, archive_size, files, unpacked = make_archive()
port = free_port()
server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                           "--directory", www, str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    wait_port(port)
    url = f"http://127.0.0.1:{port}/site.tar.gz"
    results = {"podkit": [], "script": []}
    for r in range(ROUNDS):
        for tool in ("podkit", "script") if r % 2 == 0 else ("script", "podkit"):
            dest = os.path.join(WORK, f"dest-{tool}-{r}")
            results[tool].append(publish(tool, url, dest))
            check(dest, files)
            shutil.rmtree(dest)

    relay = Relay(port)
    rurl = f"http://127.0.0.1:{relay.port}/site.tar.gz"
    # podkit: one sync publishes, then idle polls (conditional GETs answered 304), counted by
    # its own /metrics.
    dest = os.path.join(WORK, "poll-podkit")
    health = free_port()
    proc = subprocess.Popen([PODKIT, "--url", rurl, "--dest", dest, "--period", "300ms",
                             "--health-addr", f"127.0.0.1:{health}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PODKIT_LOG="warn"))

    def not_modified():
        import urllib.request
        body = urllib.request.urlopen(f"http://127.0.0.1:{health}/metrics", timeout=5).read().decode()
        return int(re.search(r"^podkit_puller_not_modified_total (\d+)", body, re.M).group(1))

    def wait_polls(n):
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                sys.exit("podkit-puller exited")
            try:
                if not_modified() >= n:
                    return
            except OSError:
                pass
            time.sleep(0.02)
        sys.exit("podkit-puller did not poll")

    wait_polls(1)
    relay.take()
    wait_polls(1 + POLLS)
    podkit_poll = relay.take() / POLLS
    stop(proc)
    shutil.rmtree(dest)

    # curl re-downloading (the naive loop), and curl -R -z (If-Modified-Since from the mtime).
    fetched = os.path.join(WORK, "poll-curl.tar.gz")
    subprocess.run(["curl", "-fsS", "-R", "-o", fetched, rurl], check=True)
    relay.take()
    for _ in range(POLLS):
        subprocess.run(["curl", "-fsS", "-o", fetched, rurl], check=True)
    naive_poll = relay.take() / POLLS
    subprocess.run(["curl", "-fsS", "-R", "-o", fetched, rurl], check=True)
    relay.take()
    for _ in range(POLLS):
        subprocess.run(["curl", "-fsS", "-R", "-z", fetched, "-o", fetched, rurl], check=True)
    z_poll = relay.take() / POLLS
    os.remove(fetched)
finally:
    stop(server)

pk_t = statistics.median(w for w, _ in results["podkit"])
sc_t = statistics.median(w for w, _ in results["script"])
pk_rss = max(r for _, r in results["podkit"]) / 1024
sc_rss = max(r for _, r in results["script"]) / 1024
print(f"archive: {archive_size / MIB:.1f} MiB .tar.gz, {files} files, {unpacked / MIB:.1f} MiB unpacked; "
      f"{ROUNDS} rounds interleaved, {POLLS} idle polls")
print()
print("| | podkit puller | curl + tar + mv | script / podkit |")
print("|---|---|---|---|")
print(f"| time to publish, median | {pk_t:.2f} s | {sc_t:.2f} s | {sc_t / pk_t:.2f}x |")
print(f"| peak RSS (max of rounds) | {pk_rss:.1f} MiB | {sc_rss:.1f} MiB (largest process) | {sc_rss / pk_rss:.2f}x |")
print(f"| bytes per idle poll, curl re-downloading | {podkit_poll:,.0f} B | {naive_poll:,.0f} B | {naive_poll / podkit_poll:,.0f}x |")
print(f"| bytes per idle poll, curl -R -z | {podkit_poll:,.0f} B | {z_poll:,.0f} B | {z_poll / podkit_poll:.2f}x |")
PY
