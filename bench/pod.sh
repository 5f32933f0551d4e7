#!/usr/bin/env bash
# A 3-member pod up and down: podkit vs `podman kube play`/`kube down` vs unshare + ip, one run.
# Usage: sudo bench/pod.sh [ROUNDS] [--no-podman]; sudo env IDLE_MS=0 bench/pod.sh ... runs the
# rounds back to back instead of after a second of idle each.
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
target="${CARGO_TARGET_DIR:-$PWD/target}"
# The driver (and, with it, podkit and a dynamic podkit-supervise), then the supervisor linked
# statically and at a fixed address, as README's install step does: no ld.so, libc and libm
# pages mapped in every pod, no relocations written at start. `cargo bench` would relink it
# dynamically, so the driver is run directly.
driver="$(cargo bench -q --bench pod --no-run --message-format=json \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | grep '/pod-' | tail -1)"
cargo rustc -q --release --bin podkit-supervise -- -C target-feature=+crt-static -C relocation-model=static
PODKIT_BIN="$target/release/podkit" "$driver" "$@"
