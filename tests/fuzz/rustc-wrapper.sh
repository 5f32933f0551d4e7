#!/usr/bin/env bash
# RUSTC_WRAPPER of the fuzz build (tests/fuzz/run.sh): libFuzzer's coverage instrumentation
# (the flags cargo-fuzz passes, minus its sanitizer) for podkit's own crates only. The parsers
# under test are podkit's; instrumenting every dependency too (gix, rustls, k8s-openapi, hyper,
# tokio) made the cold build 48 CPU minutes, and building them unoptimised instead made the
# targets run at 7-12 inputs a second.
#   cargo runs: rustc-wrapper.sh RUSTC ARGS...
set -euo pipefail
rustc=$1
shift
args=("$@")
for ((i = 0; i < ${#args[@]} - 1; i++)); do
    if [ "${args[i]}" = --crate-name ]; then
        case ${args[i + 1]} in
        podkit | podkit_fuzz | sidecars | portfwd | netns | oci | manifest | tail_lines | proxy_head | \
            unpack | upstream_response | portfwd_spec)
            args+=(-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4
                -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
                -Cllvm-args=-sanitizer-coverage-pc-table
                -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing)
            ;;
        esac
        break
    fi
done
exec "$rustc" "${args[@]}"
