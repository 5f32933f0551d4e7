#!/usr/bin/env bash
# A 3-member pod up and down: podkit vs `podman kube play`/`kube down` vs unshare + ip, one run.
# Usage: sudo bench/pod.sh [ROUNDS] [--no-podman]
# podman comes from Debian; ../shared/bench/podman-setup.sh (or the copy of its steps below)
# configures it for this kind of machine and imports a local busybox image.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/pod.sh: run as root" >&2; exit 1; }
if [[ " $* " != *" --no-podman "* ]] && ! podman image exists localhost/busybox:latest 2>/dev/null; then
  setup=../shared/bench/podman-setup.sh
  [ -x "$setup" ] || setup="bash $setup"
  $setup
fi
cargo build -q --release --bin podkit
PODKIT_BIN="$PWD/target/release/podkit" cargo bench -q --bench pod -- "$@"
