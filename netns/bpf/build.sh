#!/usr/bin/env bash
# Builds the checked-in BPF object from its C source (needs clang and the kernel's UAPI headers:
# `apt-get install -y clang linux-libc-dev`). Run after changing hostports.bpf.c; the crate
# embeds hostports.bpf.o, so building podkit needs no clang.
set -euo pipefail
cd "$(dirname "$0")"
# bpfel: the loader refuses big-endian hosts (the program reads addresses as little-endian
# words). -g for the BTF that describes the maps; its DWARF is stripped, the BTF kept.
clang -O2 -g -fdebug-prefix-map="$PWD"=. -target bpfel -mcpu=v3 -I/usr/include/$(uname -m)-linux-gnu \
    -c hostports.bpf.c -o hostports.bpf.o
llvm-strip -g hostports.bpf.o 2>/dev/null || llvm-strip-14 -g hostports.bpf.o
