//! Seccomp filters for a container's `seccompProfile`, made as containerd's CRI plugin makes
//! them: [`runtime_default()`] for `type: RuntimeDefault` and [`localhost()`] for
//! `type: Localhost`. Both give the `linux.seccomp` section of `config.json`
//! ([`bundle::Security::seccomp`](crate::bundle::Security::seccomp)); the runtime compiles it to
//! BPF with libseccomp.
//!
//! Why it is written here: the runtime spec wants the filter itself in `config.json`, so the
//! side that writes the bundle must know containerd's default profile, and no maintained Rust
//! crate ships it (youki and oci-spec take a filter, they do not make one). The tables below
//! are containerd's `contrib/seccomp/seccomp_default.go`, copied as data, as of containerd
//! v2.4.0-beta.0: the file's last change is 0c23e946a784 ("seccomp: Block AF_ALG in default
//! socket policy"), read at main 301026e58c61. Update them from that file, rule by rule.
//!
//! Both filters depend on the container's capabilities, as containerd's and Docker's read the
//! process's bounding set: podkit gives a container the same set as bounding, effective and
//! permitted (`bundle::spec`), so the caller passes that one set, by names with or without
//! `CAP_` (`"CAP_SYS_ADMIN"`, `"SYS_ADMIN"`, or an oci-spec `Capability`'s `to_string()`).
//! Which containers get a filter is the caller's to decide as containerd does: none when
//! `privileged` or `Unconfined`, none when no profile is asked for.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use nix::libc;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use serde::Deserialize;

/// The syscalls containerd's default profile allows every container, whatever its
/// capabilities (`seccomp_default.go`, the first rule of `DefaultProfile`). A name this
/// host's libseccomp does not know is skipped by the runtime (runc logs it at debug level), so
/// newer names cost nothing on an older host.
const ALLOWED: [&str; 363] = [
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat", // kernel v6.5, libseccomp v2.5.5
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2", // kernel v6.6, libseccomp v2.5.5
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue", // kernel v6.7, libseccomp v2.5.5
    "futex_time64",
    "futex_wait", // kernel v6.7, libseccomp v2.5.5
    "futex_waitv",
    "futex_wake", // kernel v6.7, libseccomp v2.5.5
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat", // kernel v6.13, libseccomp v2.6.0
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount", // kernel v6.8, libseccomp v2.6.0
    "listxattr",
    "listxattrat", // kernel v6.13, libseccomp v2.6.0
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lsm_get_self_attr", // kernel v6.8, libseccomp v2.6.0
    "lsm_list_modules",  // kernel v6.8, libseccomp v2.6.0
    "lsm_set_self_attr", // kernel v6.8, libseccomp v2.6.0
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "map_shadow_stack", // kernel v6.6, libseccomp v2.5.5
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal", // kernel v6.10, libseccomp v2.6.0
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat", // kernel v6.13, libseccomp v2.6.0
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat", // kernel v6.13, libseccomp v2.6.0
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount", // kernel v6.8, libseccomp v2.6.0
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe", // kernel v6.11, libseccomp v2.6.0
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// `personality(2)` personas the default profile allows: `PER_LINUX`, `PER_LINUX32`,
/// `UNAME26`, `PER_LINUX32|UNAME26`, and `0xffffffff` (the query).
const PERSONALITIES: [u64; 5] = [0x0, 0x0008, 0x20000, 0x20008, 0xffffffff];

/// Allowed on kernels 4.8 and later, where seccomp filters run after ptrace (before 4.8 a
/// tracer could bypass the filter).
const SINCE_4_8: [&str; 3] = ["process_vm_readv", "process_vm_writev", "ptrace"];

/// The syscalls each capability adds, in containerd's order (the `switch` over the bounding
/// set). `CAP_SYS_ADMIN` also lifts the `clone` flag rule and the `clone3` refusal.
const BY_CAPABILITY: [(&str, &[&str]); 14] = [
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// The namespace flags `clone(2)` may not carry without `CAP_SYS_ADMIN`.
const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// What the default profile and Docker profiles' `arches` need to know of an architecture.
#[derive(Debug)]
struct ArchInfo {
    /// Rust's name (`std::env::consts::ARCH`).
    rust: &'static str,
    /// libseccomp's name, which Docker profiles' `includes.arches`/`excludes.arches` use.
    native: &'static str,
    /// The native seccomp architecture: the `archMap` entry a Docker profile picks.
    scmp: Option<Arch>,
    /// containerd's `arches()`: the architectures of the default profile (its sub-ABIs too, so
    /// a 32-bit binary meets the same filter).
    arches: &'static [Arch],
    /// containerd's "include by arch" rule.
    syscalls: &'static [&'static str],
    /// Which argument of `clone(2)` holds the flags (the second on s390).
    clone_flags_arg: usize,
}

/// containerd's "include by arch" rule for arm and arm64.
const ARM_SYSCALLS: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
];

/// The architectures Rust and containerd both build for. Another host gets no architecture
/// list (the runtime then filters its native one) and no extra syscalls, as containerd's
/// `default:` cases give.
const ARCHES: [ArchInfo; 8] = [
    ArchInfo {
        rust: "x86_64",
        native: "amd64",
        scmp: Some(Arch::ScmpArchX86_64),
        arches: &[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        syscalls: &["arch_prctl", "modify_ldt"],
        clone_flags_arg: 0,
    },
    ArchInfo {
        rust: "x86",
        native: "x86",
        scmp: Some(Arch::ScmpArchX86),
        arches: &[],
        syscalls: &["modify_ldt"],
        clone_flags_arg: 0,
    },
    ArchInfo {
        rust: "aarch64",
        native: "arm64",
        scmp: Some(Arch::ScmpArchAarch64),
        arches: &[Arch::ScmpArchArm, Arch::ScmpArchAarch64],
        syscalls: ARM_SYSCALLS,
        clone_flags_arg: 0,
    },
    ArchInfo {
        rust: "arm",
        native: "arm",
        scmp: Some(Arch::ScmpArchArm),
        arches: &[],
        syscalls: ARM_SYSCALLS,
        clone_flags_arg: 0,
    },
    ArchInfo {
        rust: "s390x",
        native: "s390x",
        scmp: Some(Arch::ScmpArchS390x),
        arches: &[Arch::ScmpArchS390, Arch::ScmpArchS390x],
        syscalls: &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
        clone_flags_arg: 1,
    },
    ArchInfo {
        rust: "riscv64",
        native: "riscv64",
        scmp: Some(Arch::ScmpArchRiscv64),
        arches: &[Arch::ScmpArchRiscv64],
        syscalls: &["riscv_flush_icache", "riscv_hwprobe"],
        clone_flags_arg: 0,
    },
    ArchInfo {
        rust: "loongarch64",
        native: "loong64",
        scmp: Some(Arch::ScmpArchLoongarch64),
        arches: &[Arch::ScmpArchLoongarch64],
        syscalls: &[],
        clone_flags_arg: 0,
    },
    // Little-endian only: Go's and Debian's 64-bit PowerPC.
    ArchInfo {
        rust: "powerpc64",
        native: "ppc64le",
        scmp: Some(Arch::ScmpArchPpc64le),
        arches: &[],
        syscalls: &["sync_file_range2", "swapcontext"],
        clone_flags_arg: 0,
    },
];

/// The host a filter is made for: its architecture and kernel.
#[derive(Debug)]
struct Host {
    arch: &'static ArchInfo,
    /// `major.minor` of the running kernel; `None` when `/proc` does not say.
    kernel: Option<(u32, u32)>,
}

/// An architecture Rust builds for that containerd's table lacks.
const OTHER_ARCH: ArchInfo = ArchInfo {
    rust: std::env::consts::ARCH,
    native: std::env::consts::ARCH,
    scmp: None,
    arches: &[],
    syscalls: &[],
    clone_flags_arg: 0,
};

impl Host {
    fn current() -> Self {
        Self {
            arch: arch_info(std::env::consts::ARCH),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .and_then(|release| kernel_version(release.trim())),
        }
    }

    fn kernel_at_least(&self, version: (u32, u32)) -> Option<bool> {
        self.kernel.map(|kernel| kernel >= version)
    }
}

fn arch_info(rust: &str) -> &'static ArchInfo {
    if rust == "powerpc64" && cfg!(target_endian = "big") {
        return &OTHER_ARCH;
    }
    ARCHES
        .iter()
        .find(|a| a.rust == rust)
        .unwrap_or(&OTHER_ARCH)
}

/// `major.minor` of a kernel release (`6.1.0-18-amd64`) or of a Docker profile's `minKernel`
/// (`4.8`).
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// The container's capabilities, by their `CAP_` names.
#[derive(Debug)]
struct Capabilities(BTreeSet<String>);

impl Capabilities {
    fn new<S: AsRef<str>>(names: &[S]) -> Self {
        Self(names.iter().map(|n| cap_name(n.as_ref())).collect())
    }

    fn has(&self, name: &str) -> bool {
        self.0.contains(&cap_name(name))
    }
}

/// `sys_admin`, `SYS_ADMIN` and `CAP_SYS_ADMIN` are one capability.
fn cap_name(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// Kubernetes' `seccompProfile: {type: RuntimeDefault}`: containerd's default profile
/// (`contrib/seccomp` `DefaultProfile`) for a container with these capabilities, on this
/// host's architecture and kernel.
///
/// Every syscall not allowed fails with `EPERM`; `clone3` fails with `ENOSYS` instead unless
/// `CAP_SYS_ADMIN` (so that libc falls back to `clone`, whose flags the filter can see).
///
/// ```
/// use oci::bundle::DEFAULT_CAPABILITIES;
/// let caps: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
/// let filter = oci::seccomp::runtime_default(&caps);
/// let rules = filter.syscalls().as_deref().unwrap_or_default();
/// let mount = rules.iter().any(|s| s.names().iter().any(|n| n == "mount"));
/// assert!(!mount, "mount needs CAP_SYS_ADMIN");
/// ```
pub fn runtime_default<S: AsRef<str>>(capabilities: &[S]) -> LinuxSeccomp {
    default_profile(&Capabilities::new(capabilities), &Host::current())
}

fn default_profile(caps: &Capabilities, host: &Host) -> LinuxSeccomp {
    let mut syscalls = vec![rule(&ALLOWED, LinuxSeccompAction::ScmpActAllow, Vec::new())];
    // socket(2) for every address family but AF_ALG and AF_VSOCK, as three single-condition
    // rules: runc ORs repeated conditions on one argument, so "!= ALG and != VSOCK" would
    // allow both (containerd's comment).
    for (op, family) in [
        (LinuxSeccompOperator::ScmpCmpLt, libc::AF_ALG),
        (LinuxSeccompOperator::ScmpCmpEq, libc::AF_ALG + 1),
        (LinuxSeccompOperator::ScmpCmpGt, libc::AF_VSOCK),
    ] {
        syscalls.push(rule(
            &["socket"],
            LinuxSeccompAction::ScmpActAllow,
            vec![arg(0, op, family as u64, None)],
        ));
    }
    for persona in PERSONALITIES {
        syscalls.push(rule(
            &["personality"],
            LinuxSeccompAction::ScmpActAllow,
            vec![arg(0, LinuxSeccompOperator::ScmpCmpEq, persona, None)],
        ));
    }
    // containerd leaves these out when it cannot read the kernel's version, as here.
    if host.kernel_at_least((4, 8)) == Some(true) {
        syscalls.push(rule(
            &SINCE_4_8,
            LinuxSeccompAction::ScmpActAllow,
            Vec::new(),
        ));
    }
    if !host.arch.syscalls.is_empty() {
        syscalls.push(rule(
            host.arch.syscalls,
            LinuxSeccompAction::ScmpActAllow,
            Vec::new(),
        ));
    }
    for (cap, names) in BY_CAPABILITY {
        if caps.has(cap) {
            syscalls.push(rule(names, LinuxSeccompAction::ScmpActAllow, Vec::new()));
        }
    }
    if !caps.has("CAP_SYS_ADMIN") {
        // clone(2) without namespace flags: (flags & CLONE_NEW*) == 0.
        syscalls.push(rule(
            &["clone"],
            LinuxSeccompAction::ScmpActAllow,
            vec![arg(
                host.arch.clone_flags_arg,
                LinuxSeccompOperator::ScmpCmpMaskedEq,
                CLONE_NAMESPACE_FLAGS,
                Some(0),
            )],
        ));
        // clone3's flags sit in a struct the filter cannot read: ENOSYS makes libc fall back
        // to clone (moby/moby#42681).
        let mut clone3 = rule(&["clone3"], LinuxSeccompAction::ScmpActErrno, Vec::new());
        clone3.set_errno_ret(Some(libc::ENOSYS as u32));
        syscalls.push(clone3);
    }
    let mut profile = LinuxSeccomp::default();
    // No defaultErrnoRet, as containerd: SCMP_ACT_ERRNO alone returns EPERM.
    profile
        .set_default_action(LinuxSeccompAction::ScmpActErrno)
        .set_architectures((!host.arch.arches.is_empty()).then(|| host.arch.arches.to_vec()))
        .set_syscalls(Some(syscalls));
    profile
}

fn rule(names: &[&str], action: LinuxSeccompAction, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    let mut rule = LinuxSyscall::default();
    rule.set_names(names.iter().map(|n| n.to_string()).collect())
        .set_action(action)
        .set_args((!args.is_empty()).then_some(args));
    rule
}

fn arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> LinuxSeccompArg {
    let mut arg = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    if let Some(value_two) = value_two {
        arg = arg.value_two(value_two);
    }
    // The builder fails only for a field without a default, and every field has one.
    arg.build().expect("seccomp arg")
}

/// Why a Localhost profile could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The file could not be read.
    #[error("cannot read seccomp profile {path}: {source}")]
    Read {
        /// The profile.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not JSON, or not a profile's JSON.
    #[error("seccomp profile {path} is invalid at {at}: {source}")]
    Parse {
        /// The profile.
        path: PathBuf,
        /// Where in the document (`syscalls[2].args[0].op`, `the top level`).
        at: String,
        /// serde's words, with the line and column.
        source: serde_json::Error,
    },
    /// An action the runtime spec does not define.
    #[error(
        "seccomp profile {path}: {at}: unknown action {action:?}; use one of SCMP_ACT_ALLOW, \
         SCMP_ACT_ERRNO, SCMP_ACT_KILL, SCMP_ACT_KILL_PROCESS, SCMP_ACT_KILL_THREAD, \
         SCMP_ACT_LOG, SCMP_ACT_NOTIFY, SCMP_ACT_TRACE, SCMP_ACT_TRAP"
    )]
    UnknownAction {
        /// The profile.
        path: PathBuf,
        /// Where (`defaultAction`, `syscalls[2].action`).
        at: String,
        /// The action as written.
        action: String,
    },
    /// No `defaultAction`: what the filter does with every other syscall is unsaid.
    #[error(
        "seccomp profile {path}: no defaultAction; say what happens to the syscalls no rule \
         names (SCMP_ACT_ERRNO refuses them)"
    )]
    NoDefaultAction {
        /// The profile.
        path: PathBuf,
    },
    /// Two fields that say the same thing (`architectures` and `archMap`, `name` and `names`).
    #[error("seccomp profile {path}: {at}: both {first} and {second} are given; use one")]
    Ambiguous {
        /// The profile.
        path: PathBuf,
        /// Where (`top level`, `syscalls[2]`).
        at: String,
        /// The one field.
        first: &'static str,
        /// The other.
        second: &'static str,
    },
    /// A syscall rule that names no syscall.
    #[error("seccomp profile {path}: {at}: the rule names no syscall; give names (or name)")]
    NoNames {
        /// The profile.
        path: PathBuf,
        /// Where (`syscalls[2]`).
        at: String,
    },
    /// A `minKernel` that is no `<major>.<minor>`.
    #[error("seccomp profile {path}: {at}: kernel version {version:?} is not <major>.<minor>")]
    BadKernelVersion {
        /// The profile.
        path: PathBuf,
        /// Where (`syscalls[2].includes.minKernel`).
        at: String,
        /// As written.
        version: String,
    },
    /// A `minKernel` to compare with, and this host's kernel version unknown.
    #[error(
        "seccomp profile {path}: {at}: this host's kernel version is unknown \
         (/proc/sys/kernel/osrelease is unreadable)"
    )]
    UnknownKernel {
        /// The profile.
        path: PathBuf,
        /// Where (`syscalls[2].includes.minKernel`).
        at: String,
    },
}

/// A profile file: Docker's format (moby's `profiles/seccomp` `Seccomp`), whose fields are
/// the runtime spec's `LinuxSeccomp` plus `archMap` and, per rule, `name`, `comment`,
/// `includes` and `excludes`; so a file in the runtime spec's form reads as one too.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileFile {
    default_action: Option<String>,
    default_errno_ret: Option<u32>,
    architectures: Option<Vec<Arch>>,
    arch_map: Option<Vec<ArchMap>>,
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    listener_path: Option<PathBuf>,
    listener_metadata: Option<String>,
    syscalls: Option<Vec<RuleFile>>,
}

/// An `archMap` entry: the native architecture and the sub-ABIs that go with it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: Arch,
    sub_architectures: Option<Vec<Arch>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleFile {
    names: Option<Vec<String>>,
    name: Option<String>,
    action: String,
    errno_ret: Option<u32>,
    args: Option<Vec<LinuxSeccompArg>>,
    includes: Option<Condition>,
    excludes: Option<Condition>,
}

/// When a rule is kept (`includes`: all of it holds) or dropped (`excludes`: any of it holds).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Condition {
    /// Capabilities (`CAP_SYS_ADMIN`).
    caps: Option<Vec<String>>,
    /// libseccomp's architecture names (`amd64`, `arm64`, `s390x`).
    arches: Option<Vec<String>>,
    /// `<major>.<minor>`: this kernel or a later one.
    min_kernel: Option<String>,
}

/// Kubernetes' `seccompProfile: {type: Localhost, localhostProfile: ...}`: the profile at `path`
/// (kubelet's `<root-dir>/seccomp/` joined with `localhostProfile`), in Docker's format or the
/// runtime spec's, for a container with these capabilities on this host.
///
/// Rules are kept or dropped by their `includes`/`excludes` (capabilities, architecture,
/// `minKernel`), and `archMap` gives the entry of this host's architecture, as Docker's
/// `LoadProfile` does. containerd decodes the file straight into the runtime spec's struct,
/// which ignores those fields, so a Docker profile's conditional rules would all apply there.
pub fn localhost<S: AsRef<str>>(
    path: impl AsRef<Path>,
    capabilities: &[S],
) -> Result<LinuxSeccomp, SeccompError> {
    let path = path.as_ref();
    let text = std::fs::read(path).map_err(|source| SeccompError::Read {
        path: path.to_owned(),
        source,
    })?;
    from_file(
        &text,
        path,
        &Capabilities::new(capabilities),
        &Host::current(),
    )
}

fn from_file(
    text: &[u8],
    path: &Path,
    caps: &Capabilities,
    host: &Host,
) -> Result<LinuxSeccomp, SeccompError> {
    let path_buf = || path.to_owned();
    let mut json = serde_json::Deserializer::from_slice(text);
    let file: ProfileFile =
        serde_path_to_error::deserialize(&mut json).map_err(|err| SeccompError::Parse {
            path: path_buf(),
            at: match err.path().to_string() {
                top if top == "." => "the top level".to_owned(),
                at => at,
            },
            source: err.into_inner(),
        })?;
    // Only whitespace may follow the document.
    json.end().map_err(|source| SeccompError::Parse {
        path: path_buf(),
        at: "the top level".to_owned(),
        source,
    })?;
    let action = |at: String, action: &str| {
        serde_json::from_value::<LinuxSeccompAction>(serde_json::Value::from(action)).map_err(
            |_| SeccompError::UnknownAction {
                path: path_buf(),
                at,
                action: action.to_owned(),
            },
        )
    };
    let default_action = match file.default_action.as_deref() {
        None | Some("") => return Err(SeccompError::NoDefaultAction { path: path_buf() }),
        Some(name) => action("defaultAction".to_owned(), name)?,
    };
    let architectures = file.architectures.unwrap_or_default();
    let arch_map = file.arch_map.unwrap_or_default();
    if !architectures.is_empty() && !arch_map.is_empty() {
        return Err(SeccompError::Ambiguous {
            path: path_buf(),
            at: "top level".to_owned(),
            first: "architectures",
            second: "archMap",
        });
    }
    let mut arches = architectures;
    if let Some(entry) = arch_map
        .into_iter()
        .find(|e| Some(e.architecture) == host.arch.scmp)
    {
        arches.push(entry.architecture);
        arches.extend(entry.sub_architectures.unwrap_or_default());
    }

    let mut syscalls = Vec::new();
    for (i, file_rule) in file.syscalls.unwrap_or_default().into_iter().enumerate() {
        let at = format!("syscalls[{i}]");
        // Every rule is checked, kept or not: a mistake shows on any host.
        let rule_action = action(format!("{at}.action"), &file_rule.action)?;
        let mut names = file_rule.names.unwrap_or_default();
        match file_rule.name.filter(|n| !n.is_empty()) {
            Some(_) if !names.is_empty() => {
                return Err(SeccompError::Ambiguous {
                    path: path_buf(),
                    at,
                    first: "name",
                    second: "names",
                });
            }
            Some(name) => names.push(name),
            None if names.is_empty() => {
                return Err(SeccompError::NoNames {
                    path: path_buf(),
                    at,
                });
            }
            None => {}
        }
        let included = Clause::Includes.holds(&file_rule.includes, caps, host, path, &at)?;
        let excluded = Clause::Excludes.holds(&file_rule.excludes, caps, host, path, &at)?;
        if included == Some(false) || excluded == Some(true) {
            continue;
        }
        let mut rule = LinuxSyscall::default();
        rule.set_names(names)
            .set_action(rule_action)
            .set_errno_ret(file_rule.errno_ret)
            .set_args(file_rule.args.filter(|a| !a.is_empty()));
        syscalls.push(rule);
    }

    let mut profile = LinuxSeccomp::default();
    profile
        .set_default_action(default_action)
        .set_default_errno_ret(file.default_errno_ret)
        .set_architectures((!arches.is_empty()).then_some(arches))
        .set_flags(file.flags.filter(|f| !f.is_empty()))
        .set_listener_path(file.listener_path)
        .set_listener_metadata(file.listener_metadata)
        .set_syscalls((!syscalls.is_empty()).then_some(syscalls));
    Ok(profile)
}

/// A rule's `includes` (kept when all of it holds) or `excludes` (dropped when any of it
/// holds), as Docker's `setupSeccomp` reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clause {
    Includes,
    Excludes,
}

impl Clause {
    /// Whether the condition holds here: all its parts for `includes`, any for `excludes`;
    /// `None` when the rule has none.
    fn holds(
        self,
        condition: &Option<Condition>,
        caps: &Capabilities,
        host: &Host,
        path: &Path,
        at: &str,
    ) -> Result<Option<bool>, SeccompError> {
        let Some(condition) = condition else {
            return Ok(None);
        };
        let mut parts = Vec::new();
        if let Some(arches) = condition.arches.as_ref().filter(|a| !a.is_empty()) {
            parts.push(arches.iter().any(|a| a == host.arch.native));
        }
        if let Some(wanted) = condition.caps.as_ref().filter(|c| !c.is_empty()) {
            parts.push(match self {
                Self::Includes => wanted.iter().all(|c| caps.has(c)),
                Self::Excludes => wanted.iter().any(|c| caps.has(c)),
            });
        }
        if let Some(min) = condition.min_kernel.as_deref().filter(|m| !m.is_empty()) {
            let which = match self {
                Self::Includes => "includes",
                Self::Excludes => "excludes",
            };
            let at = format!("{at}.{which}.minKernel");
            let min = kernel_version(min).ok_or_else(|| SeccompError::BadKernelVersion {
                path: path.to_owned(),
                at: at.clone(),
                version: min.to_owned(),
            })?;
            let newer = host
                .kernel_at_least(min)
                .ok_or_else(|| SeccompError::UnknownKernel {
                    path: path.to_owned(),
                    at,
                })?;
            parts.push(newer);
        }
        Ok(Some(match self {
            Self::Includes => parts.iter().all(|p| *p),
            Self::Excludes => parts.iter().any(|p| *p),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(arch: &str, kernel: (u32, u32)) -> Host {
        Host {
            arch: arch_info(arch),
            kernel: Some(kernel),
        }
    }

    /// The default profile on an x86_64 host with a 6.1 kernel.
    fn default_for(caps: &[&str]) -> LinuxSeccomp {
        default_profile(&Capabilities::new(caps), &host("x86_64", (6, 1)))
    }

    fn docker_caps() -> Vec<String> {
        crate::bundle::DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect()
    }

    /// The rules that name `name`.
    fn rules<'a>(profile: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        profile
            .syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names().iter().any(|n| n == name))
            .collect()
    }

    /// Whether `name` is allowed whatever its arguments.
    fn allowed(profile: &LinuxSeccomp, name: &str) -> bool {
        rules(profile, name)
            .iter()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
    }

    fn json(profile: &LinuxSeccomp) -> serde_json::Value {
        serde_json::to_value(profile).expect("json")
    }

    #[test]
    fn runtime_default_refuses_what_it_does_not_allow_with_eperm() {
        let caps = docker_caps();
        let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
        let profile = default_for(&caps);
        let value = json(&profile);
        assert_eq!(value["defaultAction"], "SCMP_ACT_ERRNO");
        // No defaultErrnoRet: SCMP_ACT_ERRNO alone is EPERM, as containerd writes it.
        assert!(value.get("defaultErrnoRet").is_none(), "{value}");
        for name in [
            "read", "write", "execve", "openat", "mkdir", "setuid", "wait4",
        ] {
            assert!(allowed(&profile, name), "{name}");
        }
        // Docker's capabilities include CAP_SYS_CHROOT.
        assert!(allowed(&profile, "chroot"));
        for name in [
            "mount",
            "unshare",
            "setns",
            "reboot",
            "kexec_load",
            "init_module",
            "bpf",
            "open_by_handle_at",
            "io_uring_setup",
            "keyctl",
            "add_key",
            "userfaultfd",
        ] {
            assert!(rules(&profile, name).is_empty(), "{name} is refused");
        }
    }

    #[test]
    fn cap_sys_admin_allows_namespaces_and_mounts() {
        let without = default_for(&["CAP_CHOWN"]);
        for name in ["mount", "umount2", "unshare", "setns", "sethostname"] {
            assert!(rules(&without, name).is_empty(), "{name}");
        }
        // clone only without namespace flags; clone3 says ENOSYS, so libc falls back to clone.
        let clone = rules(&without, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(
            serde_json::to_value(clone[0]).expect("json"),
            serde_json::json!({
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 0x7e02_0000u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
            })
        );
        let clone3 = rules(&without, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(38), "ENOSYS");

        // Kubernetes' spelling: no CAP_ prefix.
        let admin = default_for(&["SYS_ADMIN"]);
        for name in [
            "mount", "umount2", "unshare", "setns", "clone", "clone3", "bpf",
        ] {
            assert!(allowed(&admin, name), "{name}");
        }
        assert!(rules(&admin, "clone").iter().all(|r| r.args().is_none()));
        assert!(
            rules(&admin, "clone3")
                .iter()
                .all(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
        );
    }

    #[test]
    fn each_capability_allows_its_syscalls() {
        let none = default_for(&[]);
        for (cap, name) in [
            ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
            ("CAP_SYS_BOOT", "reboot"),
            ("CAP_SYS_CHROOT", "chroot"),
            ("CAP_SYS_MODULE", "finit_module"),
            ("CAP_SYS_PACCT", "acct"),
            ("CAP_SYS_PTRACE", "kcmp"),
            ("CAP_SYS_RAWIO", "iopl"),
            ("CAP_SYS_TIME", "clock_settime"),
            ("CAP_SYS_TTY_CONFIG", "vhangup"),
            ("CAP_SYS_NICE", "mbind"),
            ("CAP_SYSLOG", "syslog"),
            ("CAP_BPF", "bpf"),
            ("CAP_PERFMON", "perf_event_open"),
            ("sys_admin", "mount"),
        ] {
            assert!(!allowed(&none, name), "{name} without {cap}");
            assert!(allowed(&default_for(&[cap]), name), "{name} with {cap}");
        }
    }

    #[test]
    fn the_architectures_are_the_hosts_and_its_sub_abis() {
        let caps = Capabilities::new::<&str>(&[]);
        let x86 = default_profile(&caps, &host("x86_64", (6, 1)));
        assert_eq!(
            json(&x86)["architectures"],
            serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        assert!(allowed(&x86, "arch_prctl") && !allowed(&x86, "set_tls"));
        let arm = default_profile(&caps, &host("aarch64", (6, 1)));
        assert_eq!(
            json(&arm)["architectures"],
            serde_json::json!(["SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"])
        );
        assert!(allowed(&arm, "set_tls") && !allowed(&arm, "arch_prctl"));
        // s390's clone takes the flags second.
        let s390 = default_profile(&caps, &host("s390x", (6, 1)));
        let clone = rules(&s390, "clone");
        assert_eq!(clone[0].args().as_ref().expect("args")[0].index(), 1);
        // An architecture containerd has no list for: the runtime's native one.
        let other = default_profile(&caps, &host("sparc64", (6, 1)));
        assert!(other.architectures().is_none());
        // This host.
        let here = runtime_default::<&str>(&[]);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(here.architectures(), x86.architectures());
        }
    }

    #[test]
    fn personality_and_socket_take_arguments() {
        let profile = default_for(&[]);
        let values: Vec<(u64, LinuxSeccompOperator)> = rules(&profile, "personality")
            .iter()
            .map(|r| {
                let args = r.args().as_ref().expect("args");
                assert_eq!((args.len(), args[0].index()), (1, 0));
                (args[0].value(), args[0].op())
            })
            .collect();
        let eq = LinuxSeccompOperator::ScmpCmpEq;
        assert_eq!(
            values,
            [
                (0, eq),
                (8, eq),
                (0x20000, eq),
                (0x20008, eq),
                (0xffff_ffff, eq)
            ]
        );
        // Every address family but AF_ALG (38) and AF_VSOCK (40).
        let socket: Vec<(u64, LinuxSeccompOperator)> = rules(&profile, "socket")
            .iter()
            .map(|r| {
                let args = r.args().as_ref().expect("args");
                (args[0].value(), args[0].op())
            })
            .collect();
        assert_eq!(
            socket,
            [
                (38, LinuxSeccompOperator::ScmpCmpLt),
                (39, eq),
                (40, LinuxSeccompOperator::ScmpCmpGt)
            ]
        );
    }

    #[test]
    fn ptrace_needs_kernel_4_8_or_cap_sys_ptrace() {
        let caps = Capabilities::new::<&str>(&[]);
        assert!(!allowed(
            &default_profile(&caps, &host("x86_64", (4, 4))),
            "ptrace"
        ));
        assert!(allowed(
            &default_profile(&caps, &host("x86_64", (4, 8))),
            "ptrace"
        ));
        let unknown = Host {
            arch: arch_info("x86_64"),
            kernel: None,
        };
        assert!(!allowed(&default_profile(&caps, &unknown), "ptrace"));
        let ptrace = Capabilities::new(&["CAP_SYS_PTRACE"]);
        assert!(allowed(
            &default_profile(&ptrace, &host("x86_64", (4, 4))),
            "ptrace"
        ));
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.44-fc-v1045"), Some((6, 18)));
        assert_eq!(kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("4.8"), Some((4, 8)));
        assert_eq!(kernel_version("5.10.1"), Some((5, 10)));
        assert_eq!(kernel_version("4"), None);
        assert_eq!(kernel_version("four.eight"), None);
    }

    /// A profile in Docker's format, with `archMap`, `name` and conditional rules.
    const DOCKER_PROFILE: &str = r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
        ],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": [], "comment": "always"},
            {"name": "mount", "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
             "excludes": {"caps": ["CAP_SYS_ADMIN", "CAP_SYS_BOOT"]}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
            {"names": ["set_tls"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm", "arm64"]}},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
            {"names": ["future"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
            {"names": ["old"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.0"}},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}], "includes": {}},
            {"names": ["kill"], "action": "SCMP_ACT_LOG", "includes": {"caps": ["CAP_KILL", "CAP_SYS_ADMIN"]}}
        ]
    }"#;

    fn load(text: &str, caps: &[&str], host: &Host) -> Result<LinuxSeccomp, SeccompError> {
        from_file(
            text.as_bytes(),
            Path::new("/var/lib/kubelet/seccomp/test.json"),
            &Capabilities::new(caps),
            host,
        )
    }

    fn names(profile: &LinuxSeccomp) -> Vec<String> {
        profile
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|r| r.names().clone())
            .collect()
    }

    #[test]
    fn a_docker_profile_is_filtered_by_capabilities_arch_and_kernel() {
        let x86 = host("x86_64", (6, 1));
        let plain = load(DOCKER_PROFILE, &["CAP_KILL"], &x86).expect("profile");
        assert_eq!(
            names(&plain),
            [
                "read",
                "write",
                "mkdir",
                "arch_prctl",
                "ptrace",
                "personality"
            ]
        );
        let value = json(&plain);
        assert_eq!(value["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(value["defaultErrnoRet"], 1);
        assert_eq!(
            value["architectures"],
            serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        let mkdir = rules(&plain, "mkdir");
        assert_eq!(
            (mkdir[0].action(), mkdir[0].errno_ret()),
            (LinuxSeccompAction::ScmpActErrno, Some(13))
        );
        assert_eq!(
            serde_json::to_value(rules(&plain, "personality")[0]).expect("json")["args"],
            serde_json::json!([{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}])
        );
        // Docker's comment and empty args are not the runtime's business.
        assert!(value["syscalls"][0].get("comment").is_none());
        assert!(value["syscalls"][0].get("args").is_none());

        // CAP_SYS_ADMIN: mount kept, mkdir's refusal dropped; every listed cap for `kill`.
        let admin = load(DOCKER_PROFILE, &["SYS_ADMIN", "KILL"], &x86).expect("profile");
        assert_eq!(
            names(&admin),
            [
                "read",
                "write",
                "mount",
                "arch_prctl",
                "ptrace",
                "personality",
                "kill"
            ]
        );

        // Another architecture and an old kernel.
        let arm = load(DOCKER_PROFILE, &[], &host("aarch64", (4, 4))).expect("profile");
        assert_eq!(
            names(&arm),
            ["read", "write", "mkdir", "set_tls", "old", "personality"]
        );
        assert_eq!(
            json(&arm)["architectures"],
            serde_json::json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
        );
    }

    /// A file in the runtime spec's form reads back as written: the default profile, saved.
    #[test]
    fn a_runtime_spec_profile_reads_as_written() {
        let caps = docker_caps();
        let profile = runtime_default(&caps);
        let text = serde_json::to_string_pretty(&profile).expect("json");
        let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
        let read = load(&text, &caps, &Host::current()).expect("profile");
        assert_eq!(read, profile);
    }

    #[test]
    fn a_bad_profile_says_where_and_what() {
        let x86 = host("x86_64", (6, 1));
        let err = |text: &str| load(text, &[], &x86).expect_err("an error").to_string();
        let missing = localhost("/nonexistent/podkit/profile.json", &["CAP_KILL"])
            .expect_err("an error")
            .to_string();
        assert_eq!(
            missing,
            "cannot read seccomp profile /nonexistent/podkit/profile.json: No such file or \
             directory (os error 2)"
        );
        let e = err(r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 8}]}
        ]}"#);
        assert!(
            e.starts_with(
                "seccomp profile /var/lib/kubelet/seccomp/test.json is invalid at \
                 syscalls[1].args[0]: missing field `op`"
            ),
            "{e}"
        );
        let e = err(r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_Z80"]}"#);
        assert!(
            e.contains("invalid at architectures[0]: unknown variant `SCMP_ARCH_Z80`"),
            "{e}"
        );
        let e = err(r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [}"#);
        assert!(e.contains("invalid at syscalls"), "{e}");
        assert!(e.contains("line 1 column"), "{e}");
        let e = err(r#"{"defaultAction": "SCMP_ACT_ERRNO"} {}"#);
        assert!(
            e.contains("invalid at the top level: trailing characters"),
            "{e}"
        );
        let e = err(r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["write"], "action": "SCMP_ACT_MAYBE"}
        ]}"#);
        assert!(
            e.starts_with(
                "seccomp profile /var/lib/kubelet/seccomp/test.json: syscalls[1].action: \
                 unknown action \"SCMP_ACT_MAYBE\"; use one of SCMP_ACT_ALLOW,"
            ),
            "{e}"
        );
        let e = err(r#"{"defaultAction": "allow"}"#);
        assert!(e.contains("defaultAction: unknown action \"allow\""), "{e}");
        let e = err(r#"{"syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}"#);
        assert!(e.contains(": no defaultAction;"), "{e}");
        let e = err(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
            "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}"#,
        );
        assert!(
            e.contains(": top level: both architectures and archMap are given"),
            "{e}"
        );
        let e = err(r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"name": "read", "names": ["write"], "action": "SCMP_ACT_ALLOW"}]}"#);
        assert!(
            e.contains(": syscalls[0]: both name and names are given"),
            "{e}"
        );
        let e = err(r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": [], "action": "SCMP_ACT_ALLOW"}]}"#);
        assert!(
            e.contains(": syscalls[0]: the rule names no syscall"),
            "{e}"
        );
        // Checked even where the rule would be dropped anyway.
        let e = err(r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW",
             "includes": {"arches": ["s390x"]}, "excludes": {"minKernel": "5"}}]}"#);
        assert!(
            e.contains(": syscalls[0].excludes.minKernel: kernel version \"5\" is not"),
            "{e}"
        );
    }
}
