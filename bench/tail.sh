#!/usr/bin/env bash
# Benchmark: `podkit tail` (the podkit-tail binary) against GNU `tail -F`, in one run.
#
# Measures, for both tools on the same growing file:
#   1. throughput: lines/s from "writer starts" to "all lines printed" (raw output),
#   2. write-to-output latency: one line per ms, p50/p99 of (printed - written),
#   3. lines lost across 1,000 rename+create rotations while a writer appends ~38k lines/s.
# Prints a table with podkit/GNU ratios. Needs: python3, coreutils. Files live in a temp dir
# that is removed on exit; the only processes started are the two tailers, ended by pid.
#
# Usage: bench/tail.sh [--lines N] [--rotations N]
set -euo pipefail
cd "$(dirname "$0")/.."

LINES=1000000
ROTATIONS=1000
while [ $# -gt 0 ]; do
    case "$1" in
        --lines) LINES="$2"; shift 2 ;;
        --rotations) ROTATIONS="$2"; shift 2 ;;
        *) echo "usage: $0 [--lines N] [--rotations N]" >&2; exit 2 ;;
    esac
done

target="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p sidecars --bin podkit-tail
PODKIT_TAIL="$target/release/podkit-tail"
[ -x "$PODKIT_TAIL" ] || { echo "missing $PODKIT_TAIL" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

PODKIT_TAIL="$PODKIT_TAIL" WORK="$work" LINES="$LINES" ROTATIONS="$ROTATIONS" python3 - <<'PY'
import os, subprocess, sys, threading, time

PODKIT = os.environ["PODKIT_TAIL"]
WORK = os.environ["WORK"]
LINES = int(os.environ["LINES"])
ROTATIONS = int(os.environ["ROTATIONS"])
PAD = "x" * 60


def tool_cmd(tool, path):
    if tool == "gnu":
        return ["tail", "-F", "-n", "+1", "-s", "0.1", path]
    return [PODKIT, "--path", path, "--poll-interval", "100ms", "--rotate-wait", "1s"]


def start(tool, path, stdout):
    env = dict(os.environ, PODKIT_LOG="warn")
    return subprocess.Popen(tool_cmd(tool, path), stdout=stdout,
                            stderr=subprocess.DEVNULL, env=env)


def stop(proc):
    # Only the process this script started, by pid.
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_file_size(path, size, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and os.path.getsize(path) >= size:
            return True
        time.sleep(0.002)
    return False


def throughput(tool):
    d = os.path.join(WORK, "tp-" + tool)
    os.makedirs(d)
    src = os.path.join(d, "input")
    with open(src, "w") as f:
        for i in range(LINES):
            f.write(f"line {i:08d} {PAD}\n")
    size = os.path.getsize(src)
    log = os.path.join(d, "app.log")
    open(log, "w").close()
    out_path = os.path.join(d, "out")
    with open(out_path, "w") as out:
        proc = start(tool, log, out)
        time.sleep(0.5)  # both tools are following the empty file
        t0 = time.monotonic()
        with open(src, "rb") as s, open(log, "ab") as w:
            while True:
                chunk = s.read(1 << 16)
                if not chunk:
                    break
                w.write(chunk)
                w.flush()
        ok = wait_file_size(out_path, size, 120)
        t1 = time.monotonic()
        stop(proc)
    if not ok:
        return None
    return LINES / (t1 - t0)


def latency(tool, count=2000):
    d = os.path.join(WORK, "lat-" + tool)
    os.makedirs(d)
    log = os.path.join(d, "app.log")
    open(log, "w").close()
    proc = start(tool, log, subprocess.PIPE)
    lat = []
    done = threading.Event()

    def reader():
        for raw in proc.stdout:
            now = time.monotonic_ns()
            parts = raw.split()
            if len(parts) >= 2 and parts[0] == b"t":
                lat.append((now - int(parts[1])) / 1e6)
                if len(lat) >= count:
                    break
        done.set()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    time.sleep(0.5)
    with open(log, "a", buffering=1) as w:
        for _ in range(count):
            w.write(f"t {time.monotonic_ns()} {PAD}\n")
            w.flush()
            time.sleep(0.001)
    done.wait(30)
    stop(proc)
    if len(lat) < count:
        return None
    lat.sort()
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1]


def rotations(tool, rate=38000):
    d = os.path.join(WORK, "rot-" + tool)
    os.makedirs(d)
    log = os.path.join(d, "app.log")
    open(log, "w").close()
    out_path = os.path.join(d, "out")
    per = 200
    total = per * ROTATIONS
    with open(out_path, "w") as out:
        proc = start(tool, log, out)
        time.sleep(0.5)
        w = open(log, "a")
        t0 = time.monotonic()
        n = 0
        for r in range(ROTATIONS):
            for _ in range(per):
                w.write(f"line {n:08d} {PAD}\n")
                n += 1
            w.flush()
            # Pace to `rate` lines/s.
            ahead = n / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
            # logrotate's default: rename, then the app reopens a new file.
            os.replace(log, log + ".1")
            w.close()
            w = open(log, "a")
        w.close()
        elapsed = time.monotonic() - t0
        # Wait until the output stops growing (both tools keep reading rotated files a while).
        last, still = -1, 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and still < 20:
            size = os.path.getsize(out_path)
            still = still + 1 if size == last else 0
            last = size
            time.sleep(0.1)
        stop(proc)
    seen = set()
    with open(out_path, "rb") as f:
        for line in f:
            p = line.split()
            if len(p) >= 2 and p[0] == b"line":
                seen.add(int(p[1]))
    return total - len(seen), total / elapsed


res = {}
for tool in ("gnu", "podkit"):
    res[tool] = {
        "tp": throughput(tool),
        "lat": latency(tool),
        "rot": rotations(tool),
    }
    print(f"{tool}: done", file=sys.stderr)


def fmt(v, spec):
    return "failed" if v is None else format(v, spec)


def ratio(a, b):
    return "-" if a in (None, 0) or b is None else f"{b / a:.2f}x"


g, p = res["gnu"], res["podkit"]
gl, pl = g["lat"] or (None, None), p["lat"] or (None, None)
rows = [
    ("throughput (lines/s, higher is better)", g["tp"], p["tp"], ",.0f"),
    ("latency p50 (ms)", gl[0], pl[0], ".3f"),
    ("latency p99 (ms, target <= 10)", gl[1], pl[1], ".3f"),
]
print(f"\n{LINES} lines for throughput; 2000 lines at 1/ms for latency; "
      f"{ROTATIONS} rotations at ~{g['rot'][1]:,.0f} lines/s\n")
print(f"| metric | GNU tail -F | podkit tail | podkit / GNU |")
print(f"|---|---|---|---|")
for name, a, b, spec in rows:
    print(f"| {name} | {fmt(a, spec)} | {fmt(b, spec)} | {ratio(a, b)} |")
print(f"| lines lost across {ROTATIONS} rotations | {g['rot'][0]} | {p['rot'][0]} | - |")
PY
