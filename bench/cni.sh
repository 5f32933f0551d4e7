# Sourced by bench/network.sh for its `--cni` mode: pod up (and delete) on the CNI path
# against podkit's own bridge and against no network, side by side in one run.
#
# Three networks, each with another pod on it throughout (its bridge made, the steady state):
#   bridge: podkit's own (podkit0, 10.90.0.0/16, as without PODKIT_CNI_CONF_DIR);
#   cni:    PODKIT_CNI_CONF_DIR pointing at a list of Debian's bridge (pkbench0, isGateway,
#           10.211.0.0/24), host-local (its leases under the temp dir) and portmap (with the
#           portMappings capability, as kubelet's hosts have it), from /usr/lib/cni;
#   none:   `podkit.io/network: none` (the pod's loopback only): the yardstick.
# The pod: one host-process container (`sleep 1000`), with one hostPort in the `ports` rows
# (podkit's DNAT on the bridge, portmap's iptables rules on the CNI path), without in the
# others. Rounds interleave the networks (order rotated) after a warm-up round, each apply
# after `sync` and an idle spell; `podkit apply -f` returns once the pod is Running, `podkit
# delete -f` once it is gone (CNI DEL included).
# On exit, also on failure: pods deleted, `podkit gc`, the bridge pkbench0 removed, and
# portmap's shared chains (CNI-HOSTPORT-*) and the nat tables iptables-nft made for them when
# this run made them.

cni_bench() {
    local plugins=/usr/lib/cni work
    [ -x "$plugins/bridge" ] && [ -x "$plugins/host-local" ] && [ -x "$plugins/portmap" ] || {
        echo "bench/network.sh --cni: missing CNI plugins in $plugins (apt-get install -y containernetworking-plugins)" >&2
        return 1
    }
    command -v iptables >/dev/null || {
        echo "bench/network.sh --cni: missing iptables (portmap runs it)" >&2
        return 1
    }
    if ip link show pkbench0 >/dev/null 2>&1; then
        echo "bench/network.sh --cni: pkbench0 exists (another run?)" >&2
        return 1
    fi
    work="$(mktemp -d /tmp/podkit-bench-cni.XXXXXX)"
    CNI_WORK="$work"
    CNI_TABLES_BEFORE="$(nft list tables 2>/dev/null || true)"
    CNI_HAD_CHAINS=no
    iptables-save -t nat 2>/dev/null | grep -q '^:CNI-HOSTPORT-DNAT ' && CNI_HAD_CHAINS=yes
    trap cni_cleanup EXIT
    trap 'exit 130' INT TERM
    mkdir "$work/run" "$work/net.d"
    mount -t tmpfs -o mode=0755 podkit-bench-cni "$work/run"
    cat >"$work/net.d/10-bench.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "pkbench", "plugins": [
  {"type": "bridge", "bridge": "pkbench0", "isGateway": true,
   "ipam": {"type": "host-local", "dataDir": "$work/ipam",
            "ranges": [[{"subnet": "10.211.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
    PODKIT="$PODKIT_BIN" WORK="$work" UP_ROUNDS="$UP_ROUNDS" IDLE_MS="$IDLE_MS" python3 - <<'PY'
import os, statistics, subprocess, sys, time

PODKIT = os.environ["PODKIT"]
WORK = os.environ["WORK"]
ROUNDS = max(int(os.environ["UP_ROUNDS"]), 1)
IDLE = int(os.environ["IDLE_MS"]) / 1000
DEVNULL = subprocess.DEVNULL
ENV = dict(os.environ)
for key in ("PODKIT", "WORK", "UP_ROUNDS", "IDLE_MS", "PODKIT_LOG", "PODKIT_BRIDGE",
            "PODKIT_POD_SUBNET", "PODKIT_POD_MTU", "PODKIT_CNI_CONF_DIR", "PODKIT_CNI_BIN_DIR"):
    ENV.pop(key, None)
ENV.update(PODKIT_ROOT=f"{WORK}/run/podkit", PODKIT_STORAGE=f"{WORK}/storage")
NETWORKS = {
    "bridge": ENV,
    "cni": dict(ENV, PODKIT_CNI_CONF_DIR=f"{WORK}/net.d"),
    "none": ENV,
}
SLEEP = subprocess.run(["sh", "-c", "command -v sleep"], capture_output=True,
                       text=True).stdout.strip()


def podkit(args, env):
    proc = subprocess.run([PODKIT] + args, stdin=DEVNULL, capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        sys.exit(f"podkit {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


def pod(name, network, port):
    annotations = "podkit.io/host-process: 'true'"
    if network == "none":
        annotations += ", podkit.io/network: none"
    ports = f"\n    ports: [{{containerPort: 80, hostPort: {port}}}]" if port else ""
    path = f"{WORK}/{name}.yaml"
    with open(path, "w") as f:
        f.write(f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, annotations: {{{annotations}}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    command: [{SLEEP}, '1000']{ports}
""")
    return path


def p90(xs):
    xs = sorted(xs)
    return xs[round((len(xs) - 1) * 0.9)]


# Another pod on each network throughout: the bridges made (the steady state).
for network in ("bridge", "cni"):
    podkit(["apply", "-f", pod(f"anchor-{network}", network, None)], NETWORKS[network])
up = {(n, p): [] for n in NETWORKS for p in (False, True)}
down = {(n, p): [] for n in NETWORKS for p in (False, True)}
names = list(NETWORKS)
for r in range(ROUNDS + 1):  # round 0: warm-up
    print(f"round {r}/{ROUNDS} ...", file=sys.stderr)
    for ports in (False, True):
        order = names[r % 3:] + names[:r % 3]
        for i, network in enumerate(order):
            port = 19300 + i if ports else None
            path = pod(f"up-{network}-{r}-{int(ports)}", network, port)
            os.sync()
            time.sleep(IDLE)
            t0 = time.monotonic()
            podkit(["apply", "-f", path], NETWORKS[network])
            t1 = time.monotonic()
            podkit(["delete", "-f", path], NETWORKS[network])
            t2 = time.monotonic()
            if r > 0:
                up[(network, ports)].append((t1 - t0) * 1000)
                down[(network, ports)].append((t2 - t1) * 1000)
for network in ("bridge", "cni"):
    podkit(["delete", "-f", f"{WORK}/anchor-{network}.yaml"], NETWORKS[network])

with open("/proc/loadavg") as f:
    load = f.read().split()[0]
print(f"pod up and delete: `podkit apply -f` / `podkit delete -f` of a one-container "
      f"host-process pod (sleep 1000), median (p90) of {ROUNDS} rounds interleaved after a "
      f"warm-up, {IDLE * 1000:.0f} ms idle before each, another pod on each network; load {load}")
print("| pod | | podkit's bridge | CNI (bridge, host-local, portmap) | none | CNI / bridge | "
      "CNI added | bridge added |")
print("|---|---|---|---|---|---|---|---|")
for ports in (False, True):
    label = "one hostPort" if ports else "no hostPort"
    for verb, times in (("up", up), ("delete", down)):
        b, c, n = (times[(x, ports)] for x in ("bridge", "cni", "none"))
        mb, mc, mn = (statistics.median(x) for x in (b, c, n))
        print(f"| {label} | {verb} | {mb:.1f} ms ({p90(b):.1f}) | {mc:.1f} ms ({p90(c):.1f}) | "
              f"{mn:.1f} ms ({p90(n):.1f}) | {mc / mb:.2f}x | {mc - mn:+.1f} ms | "
              f"{mb - mn:+.1f} ms |")
PY
}

# What the --cni run made, also when it failed.
cni_cleanup() {
    set +e
    local work="$CNI_WORK" d key family
    if [ -d "$work/run/podkit/pods" ]; then
        for d in "$work"/run/podkit/pods/*/; do
            [ -d "$d" ] || continue
            key="$(basename "$d")"
            PODKIT_ROOT="$work/run/podkit" PODKIT_STORAGE="$work/storage" \
                "$PODKIT_BIN" delete pod "${key#*_}" -n "${key%%_*}" --force >/dev/null 2>&1
        done
        PODKIT_ROOT="$work/run/podkit" PODKIT_STORAGE="$work/storage" \
            "$PODKIT_BIN" gc >/dev/null 2>&1
    fi
    ip link del pkbench0 >/dev/null 2>&1
    # portmap's shared chains, when this run made them and no pod of anyone's uses them.
    if [ "$CNI_HAD_CHAINS" = no ] && ! iptables-save -t nat 2>/dev/null | grep -q '^:CNI-DN-'; then
        iptables -t nat -D PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT 2>/dev/null
        iptables -t nat -D OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT 2>/dev/null
        iptables -t nat -D POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" \
            -j CNI-HOSTPORT-MASQ 2>/dev/null
        for d in CNI-HOSTPORT-DNAT CNI-HOSTPORT-MASQ CNI-HOSTPORT-SETMARK; do
            iptables -t nat -F "$d" 2>/dev/null
            iptables -t nat -X "$d" 2>/dev/null
        done
    fi
    # The nat tables iptables-nft made for portmap, when they were not there and hold nothing.
    for family in ip ip6; do
        grep -qx "table $family nat" <<<"$CNI_TABLES_BEFORE" && continue
        nft list table "$family" nat >/dev/null 2>&1 || continue
        local save=iptables-save
        [ "$family" = ip6 ] && save=ip6tables-save
        if ! "$save" -t nat 2>/dev/null | grep -E '^(-A|:)' \
                | grep -qvE '^:(PREROUTING|INPUT|OUTPUT|POSTROUTING) '; then
            nft delete table "$family" nat
        fi
    done
    awk -v w="$work/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r \
        | while read -r d; do umount -l "$d"; done
    rm -rf "$work"
}
