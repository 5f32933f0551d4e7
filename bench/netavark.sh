# Sourced by the benchmarks that run podman with its pod network (netavark's bridge and
# iptables DNAT): netavark keeps its base chains (NETAVARK-HOSTPORT-*, NETAVARK_FORWARD), and
# with them the iptables tables, after its last container.

# The host's nftables tables now: call before podman runs, and hand the text to
# remove_netavark_tables.
tables_now() {
    nft list tables 2>/dev/null || true
}

# Deletes `table ip nat` and `table ip filter` when they were not there before the run
# ($1: what tables_now printed then) and hold nothing but netavark's chains.
remove_netavark_tables() {
    local before="$1" table
    for table in nat filter; do
        grep -qx "table ip $table" <<<"$before" && continue
        nft list table ip "$table" >/dev/null 2>&1 || continue
        if ! iptables-save -t "$table" 2>/dev/null | grep '^-A' | grep -qv NETAVARK; then
            nft delete table ip "$table"
        fi
    done
}
