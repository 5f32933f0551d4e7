#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation (the flags cargo-fuzz passes,
# minus its sanitizer, so the stable toolchain builds them; on podkit's own crates) and runs each
# for a bounded time.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]     # default: 30 s each, every target
#
# Each target starts from its checked-in seeds (tests/fuzz/seeds/TARGET/) and a scratch corpus
# under target/; a crash leaves its input in tests/fuzz/artifacts/TARGET/ and fails the run: make
# it a regression test, then fix the bug.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-30}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^podkit-fuzz$')
fi

triple=$(rustc -vV | sed -n 's/^host: //p')
# The instrumentation flags go to podkit's own crates only (see rustc-wrapper.sh); --target keeps
# build scripts and proc macros apart, as cargo-fuzz does.
unset RUSTFLAGS
export RUSTC_WRAPPER=$PWD/rustc-wrapper.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/../../target/fuzz}
cargo build --release --locked --target "$triple" --bins

# The targets' scratch files (the unpacker's DEST) go to a directory of their own, removed at
# exit (libFuzzer exits without running destructors), on a tmpfs when there is one: the
# unpacker runs 8 times as many inputs a second there as on the disk-backed /tmp of a VM.
scratch_root=$CARGO_TARGET_DIR
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    scratch_root=/dev/shm
fi
scratch=$(mktemp -d "$scratch_root/podkit-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export TMPDIR=$scratch

for t in "${targets[@]}"; do
    corpus=$CARGO_TARGET_DIR/corpus/$t
    mkdir -p "$corpus" "artifacts/$t" "seeds/$t"
    echo "fuzz: $t for ${seconds}s"
    "$CARGO_TARGET_DIR/$triple/release/$t" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
        "$corpus" "seeds/$t"
done
