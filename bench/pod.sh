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
# The supervisor binary is linked statically (glibc's static-pie), as README's install step
# does: no ld.so, libc and libm pages mapped in every pod (1.9 MiB of its RSS).
cargo build -q --release --bin podkit
cargo rustc -q --release --bin podkit-supervise -- -C target-feature=+crt-static
target="${CARGO_TARGET_DIR:-$PWD/target}"
PODKIT_BIN="$target/release/podkit" cargo bench -q --bench pod -- "$@"
