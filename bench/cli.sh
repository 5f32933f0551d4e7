#!/usr/bin/env bash
# Listing 50 pods: `podkit get pods` vs `podman pod ps`, interleaved in one run.
# Usage: sudo bench/cli.sh [ROUNDS] [PODS]     (default 50 rounds, 50 pods each side)
#        PODKIT_BIN=path/to/podkit sudo -E bench/cli.sh   (a release build made already)
#
# podkit: PODS running pods (one `sleep infinity` member each) started by `podkit apply` from a
# release build, under a state root of their own (PODKIT_ROOT), so other pods on the machine
# are not listed. podman: PODS pods made by `podman pod create` (Debian's podman, configured by
# ../shared/bench/podman-setup.sh, as bench/pod.sh does). Each side's pods are deleted at the
# end, also when the script fails or is interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/cli.sh: run as root" >&2; exit 1; }
ROUNDS=${1:-50}
PODS=${2:-50}
command -v podman >/dev/null || {
  setup=../shared/bench/podman-setup.sh
  [ -x "$setup" ] || setup="bash $setup"
  $setup
}

if [ -n "${PODKIT_BIN:-}" ]; then
  PODKIT=$PODKIT_BIN
else
  cargo build -q --release --bin podkit
  PODKIT="${CARGO_TARGET_DIR:-$PWD/target}/release/podkit"
fi
export PODKIT_ROOT="/run/podkit-bench-cli-$$"
tag="pkcli-$$"
work=$(mktemp -d)

cleanup() {
  set +e
  local names=()
  for i in $(seq 1 "$PODS"); do names+=("$tag-$i"); done
  # --force: a grace period of 0; the members are `sleep`s.
  "$PODKIT" delete pod "${names[@]}" --force >/dev/null 2>&1
  "$PODKIT" gc >/dev/null 2>&1
  rm -rf "$PODKIT_ROOT" "$work"
  podman pod rm -f -i "${names[@]}" >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "making $PODS pods on each side..." >&2
for i in $(seq 1 "$PODS"); do
  [ "$i" = 1 ] || echo "---"
  cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $tag-$i, annotations: {podkit.io/host-process: "true"}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: app, image: busybox, command: [sleep, infinity]}
YAML
done >"$work/pods.yaml"
"$PODKIT" apply -f "$work/pods.yaml" >/dev/null
for i in $(seq 1 "$PODS"); do podman pod create --name "$tag-$i" >/dev/null; done

listed=$("$PODKIT" get pods | grep -c "^$tag-.* Running " || true)
[ "$listed" = "$PODS" ] || { echo "podkit get pods lists $listed of $PODS running pods" >&2; exit 1; }
listed=$(podman pod ps --format '{{.Name}}' | grep -c "^$tag-" || true)
[ "$listed" = "$PODS" ] || { echo "podman pod ps lists $listed of $PODS pods" >&2; exit 1; }

# Microseconds of one run of "$@" (output discarded); bash's EPOCHREALTIME costs no fork.
time_us() {
  local start=$EPOCHREALTIME
  "$@" >/dev/null
  local end=$EPOCHREALTIME
  echo $(( (${end/./} - ${start/./}) ))
}
for _ in 1 2 3; do "$PODKIT" get pods >/dev/null; podman pod ps >/dev/null; done  # warm-up
: >"$work/podkit"; : >"$work/podman"
for _ in $(seq 1 "$ROUNDS"); do
  time_us "$PODKIT" get pods >>"$work/podkit"
  time_us podman pod ps >>"$work/podman"
done

# Median and p90 in ms of a file of microseconds.
stat() {
  sort -n "$1" | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    p = v[int(NR * 0.9 + 0.999)]
    printf "%.1f %.1f\n", m / 1000, p / 1000 }'
}
read -r kit_median kit_p90 < <(stat "$work/podkit")
read -r man_median man_p90 < <(stat "$work/podman")
echo
echo "listing $PODS pods, $ROUNDS rounds, interleaved (load: $(cut -d' ' -f1-3 /proc/loadavg))"
printf "| %-24s | %-20s |\n" "" "median (p90)"
printf "|---|---|\n"
printf "| %-24s | %-20s |\n" "podkit get pods" "$kit_median ms ($kit_p90)"
printf "| %-24s | %-20s |\n" "podman pod ps" "$man_median ms ($man_p90)"
printf "| %-24s | %-20s |\n" "podman / podkit" "$(awk -v a="$man_median" -v b="$kit_median" 'BEGIN { printf "%.1fx", a / b }')"
