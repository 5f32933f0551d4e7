// podkit's connect-time hostPort hook: a client on the host that connects to a hostPort (on a
// loopback address, or on the hostIP the port names; over IPv6 on ::1, to a dual stack pod's
// IPv6 address) is sent straight to the pod's IP and
// container port, as Cilium's socket load balancer does for Services: the rewrite happens once
// in connect() (sendmsg() for unconnected UDP), so the packets carry no NAT and need no
// conntrack entry. getpeername() and recvmsg() give back the address the client asked for.
// Clients in other network namespaces (pods) and sockets bound to a loopback address are left
// to the DNAT rules, which stay in place for every client.
//
// The maps are filled by podkit (netns/src/hook.rs) and pinned on a bpffs with the programs'
// links. Built by netns/bpf/build.sh with clang; the object is checked in next to this file.

#include <linux/bpf.h>
#include <linux/in.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
                                   __u64 flags) = (void *)BPF_FUNC_map_update_elem;
static __u64 (*bpf_get_socket_cookie)(void *ctx) = (void *)BPF_FUNC_get_socket_cookie;
static __u64 (*bpf_get_netns_cookie)(void *ctx) = (void *)BPF_FUNC_get_netns_cookie;

// A hostPort: the address a client connects to (network order; 0 = every loopback address, a
// hostPort with no hostIP), its port (network order) and IPPROTO_TCP or IPPROTO_UDP.
struct hostport {
    __u32 ip;
    __u16 port;
    __u8 protocol;
    __u8 pad;
};

// An address and port, network order.
struct address {
    __u32 ip;
    __u16 port;
    __u16 pad;
};

// What a rewritten socket asked for, by the socket and the pod address it was given.
struct rewritten {
    __u64 cookie;
    struct address to;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16384);
    __type(key, struct hostport);
    __type(value, struct address);
} hostports SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, struct rewritten);
    __type(value, struct address);
} rewrites SEC(".maps");

// The same for IPv6 (a dual stack pod's hostPorts without a hostIP: key address 0 for ::1).
struct hostport6 {
    __u32 ip6[4];
    __u16 port;
    __u8 protocol;
    __u8 pad;
};

// A pod's IPv6 address and port, and its IPv4 address (podkit's handle on the pod's entries;
// the program does not read it).
struct address6 {
    __u32 ip6[4];
    __u16 port;
    __u16 pad;
    __u32 ip4;
};

// What an IPv6 client asked for.
struct asked6 {
    __u32 ip6[4];
    __u16 port;
    __u16 pad;
};

// Every byte named (no padding), as every map key must be: a key is compared bytewise, and
// padding left unset would differ between the update and the lookup.
struct rewritten6 {
    __u64 cookie;
    struct asked6 to;
    __u32 pad;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16384);
    __type(key, struct hostport6);
    __type(value, struct address6);
} hostports6 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, struct rewritten6);
    __type(value, struct asked6);
} rewrites6 SEC(".maps");

// [0]: the cookie of the network namespace whose clients are rewritten (the host's).
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} config SEC(".maps");

static __attribute__((always_inline)) int is_loopback(__u32 ip) {
    // Network order in memory: the first byte is the lowest on a little-endian host (the
    // object is built for bpfel; the loader refuses big-endian hosts).
    return (ip & 0xff) == 127;
}

static __attribute__((always_inline)) int rewrite(struct bpf_sock_addr *ctx) {
    __u8 protocol;
    if (ctx->protocol == IPPROTO_TCP)
        protocol = IPPROTO_TCP;
    else if (ctx->protocol == IPPROTO_UDP)
        protocol = IPPROTO_UDP;
    else
        return 1;
    __u32 zero = 0;
    __u64 *host = bpf_map_lookup_elem(&config, &zero);
    if (!host || *host == 0 || bpf_get_netns_cookie(ctx) != *host)
        return 1;
    __u32 ip = ctx->user_ip4;
    struct hostport key = {.ip = ip, .port = (__u16)ctx->user_port, .protocol = protocol};
    struct address *pod = bpf_map_lookup_elem(&hostports, &key);
    if (!pod && is_loopback(ip)) {
        key.ip = 0;
        pod = bpf_map_lookup_elem(&hostports, &key);
    }
    if (!pod)
        return 1;
    // A socket bound to a loopback address cannot reach the pod's IP from there.
    struct bpf_sock *sk = ctx->sk;
    if (!sk || is_loopback(sk->src_ip4))
        return 1;
    struct rewritten done = {.cookie = bpf_get_socket_cookie(ctx), .to = *pod};
    struct address asked = {.ip = ip, .port = key.port};
    bpf_map_update_elem(&rewrites, &done, &asked, BPF_ANY);
    ctx->user_ip4 = pod->ip;
    ctx->user_port = pod->port;
    return 1;
}

// The pod's address back to what the client asked for, on a socket this hook rewrote.
static __attribute__((always_inline)) int restore(struct bpf_sock_addr *ctx) {
    struct rewritten done = {
        .cookie = bpf_get_socket_cookie(ctx),
        .to = {.ip = ctx->user_ip4, .port = (__u16)ctx->user_port},
    };
    struct address *asked = bpf_map_lookup_elem(&rewrites, &done);
    if (asked) {
        ctx->user_ip4 = asked->ip;
        ctx->user_port = asked->port;
    }
    return 1;
}

static __attribute__((always_inline)) int is_loopback6(const __u32 *ip6) {
    // ::1, network order: the last word's last byte is 1.
    return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == 0 && ip6[3] == 0x01000000;
}

static __attribute__((always_inline)) int rewrite6(struct bpf_sock_addr *ctx) {
    __u8 protocol;
    if (ctx->protocol == IPPROTO_TCP)
        protocol = IPPROTO_TCP;
    else if (ctx->protocol == IPPROTO_UDP)
        protocol = IPPROTO_UDP;
    else
        return 1;
    __u32 zero = 0;
    __u64 *host = bpf_map_lookup_elem(&config, &zero);
    if (!host || *host == 0 || bpf_get_netns_cookie(ctx) != *host)
        return 1;
    struct hostport6 key = {.port = (__u16)ctx->user_port, .protocol = protocol};
    key.ip6[0] = ctx->user_ip6[0];
    key.ip6[1] = ctx->user_ip6[1];
    key.ip6[2] = ctx->user_ip6[2];
    key.ip6[3] = ctx->user_ip6[3];
    struct asked6 asked = {.port = key.port};
    asked.ip6[0] = key.ip6[0];
    asked.ip6[1] = key.ip6[1];
    asked.ip6[2] = key.ip6[2];
    asked.ip6[3] = key.ip6[3];
    struct address6 *pod = bpf_map_lookup_elem(&hostports6, &key);
    if (!pod && is_loopback6(key.ip6)) {
        key.ip6[3] = 0;
        pod = bpf_map_lookup_elem(&hostports6, &key);
    }
    if (!pod)
        return 1;
    // A socket bound to ::1 cannot reach the pod's IP from there.
    struct bpf_sock *sk = ctx->sk;
    if (!sk)
        return 1;
    __u32 src[4] = {sk->src_ip6[0], sk->src_ip6[1], sk->src_ip6[2], sk->src_ip6[3]};
    if (is_loopback6(src))
        return 1;
    struct rewritten6 done = {.cookie = bpf_get_socket_cookie(ctx), .to = {.port = pod->port}};
    done.to.ip6[0] = pod->ip6[0];
    done.to.ip6[1] = pod->ip6[1];
    done.to.ip6[2] = pod->ip6[2];
    done.to.ip6[3] = pod->ip6[3];
    bpf_map_update_elem(&rewrites6, &done, &asked, BPF_ANY);
    ctx->user_ip6[0] = pod->ip6[0];
    ctx->user_ip6[1] = pod->ip6[1];
    ctx->user_ip6[2] = pod->ip6[2];
    ctx->user_ip6[3] = pod->ip6[3];
    ctx->user_port = pod->port;
    return 1;
}

static __attribute__((always_inline)) int restore6(struct bpf_sock_addr *ctx) {
    struct rewritten6 done = {.cookie = bpf_get_socket_cookie(ctx), .to = {.port = (__u16)ctx->user_port}};
    done.to.ip6[0] = ctx->user_ip6[0];
    done.to.ip6[1] = ctx->user_ip6[1];
    done.to.ip6[2] = ctx->user_ip6[2];
    done.to.ip6[3] = ctx->user_ip6[3];
    struct asked6 *asked = bpf_map_lookup_elem(&rewrites6, &done);
    if (asked) {
        ctx->user_ip6[0] = asked->ip6[0];
        ctx->user_ip6[1] = asked->ip6[1];
        ctx->user_ip6[2] = asked->ip6[2];
        ctx->user_ip6[3] = asked->ip6[3];
        ctx->user_port = asked->port;
    }
    return 1;
}

SEC("cgroup/connect4")
int podkit_connect4(struct bpf_sock_addr *ctx) { return rewrite(ctx); }

SEC("cgroup/sendmsg4")
int podkit_sendmsg4(struct bpf_sock_addr *ctx) { return rewrite(ctx); }

SEC("cgroup/recvmsg4")
int podkit_recvmsg4(struct bpf_sock_addr *ctx) { return restore(ctx); }

SEC("cgroup/getpeername4")
int podkit_getpeername4(struct bpf_sock_addr *ctx) { return restore(ctx); }

SEC("cgroup/connect6")
int podkit_connect6(struct bpf_sock_addr *ctx) { return rewrite6(ctx); }

SEC("cgroup/sendmsg6")
int podkit_sendmsg6(struct bpf_sock_addr *ctx) { return rewrite6(ctx); }

SEC("cgroup/recvmsg6")
int podkit_recvmsg6(struct bpf_sock_addr *ctx) { return restore6(ctx); }

SEC("cgroup/getpeername6")
int podkit_getpeername6(struct bpf_sock_addr *ctx) { return restore6(ctx); }

char LICENSE[] SEC("license") = "Apache-2.0";
