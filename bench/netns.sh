#!/usr/bin/env bash
# Pod namespaces: podkit (netns crate) against iproute2 in one run; prints medians and the ratio.
# Usage: sudo bench/netns.sh [ROUNDS]   (default 200; needs root and iproute2)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/netns.sh: run as root (it creates namespaces)" >&2; exit 1; }
command -v ip >/dev/null || { echo "bench/netns.sh: needs ip (apt-get install iproute2)" >&2; exit 1; }
cargo bench -q -p netns --bench create_delete -- "${1:-200}"
