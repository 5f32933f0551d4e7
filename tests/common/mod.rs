//! What the end-to-end tests of pods share: `podkit run` of a manifest in the background,
//! deleted and checked when dropped, and what a test reads of its pod (status, events, logs).

// Each test binary uses part of this.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A `podkit run` in the background; deleted (SIGTERM) and checked when dropped.
pub struct Running {
    pub name: String,
    child: Option<Child>,
    file: PathBuf,
    exit: std::cell::Cell<Option<Option<i32>>>,
    /// Where `podkit run` writes its progress (stderr).
    stderr: PathBuf,
}

impl Running {
    pub fn start(prefix: &str, manifest: impl FnOnce(&str) -> String) -> Option<Running> {
        let name = format!("pkr-{prefix}-{}-{}", std::process::id(), next());
        let dir = std::env::temp_dir().join("podkit-run-test");
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, manifest(&name)).expect("manifest");
        Running::spawn(name, file)
    }

    /// Runs a copy of a manifest file as it is; its pod is named `name`.
    pub fn start_file(name: &str, file: PathBuf) -> Option<Running> {
        let dir = std::env::temp_dir().join("podkit-run-test");
        std::fs::create_dir_all(&dir).expect("dir");
        let copy = dir.join(format!("{name}-{}.yaml", std::process::id()));
        std::fs::copy(&file, &copy).expect("copy the example");
        Running::spawn(name.to_owned(), copy)
    }

    pub fn spawn(name: String, file: PathBuf) -> Option<Running> {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "podkit run needs root; CI runs as root"
            );
            eprintln!("skipped: not root");
            return None;
        }
        let dir = file.parent().expect("dir").to_path_buf();
        let stderr = dir.join(format!("{name}.stderr"));
        let child = Command::new(env!("CARGO_BIN_EXE_podkit"))
            .args(["run", "-f"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start podkit run");
        Some(Running {
            stderr,
            name,
            child: Some(child),
            file,
            exit: std::cell::Cell::new(None),
        })
    }

    pub fn dir(&self) -> PathBuf {
        Path::new("/run/podkit/pods").join(format!("default_{}", self.name))
    }

    pub fn status(&self) -> Value {
        std::fs::read_to_string(self.dir().join("status.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null)
    }

    pub fn events(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir().join("events.json")).unwrap_or_default();
        let events: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
        events
            .iter()
            .map(|e| e["message"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// What `podkit run` printed on stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn log(&self, container: &str, run: u32) -> String {
        let text = std::fs::read_to_string(
            self.dir()
                .join("logs")
                .join(container)
                .join(format!("{run}.log")),
        )
        .unwrap_or_default();
        // CRI: "<time> <stream> <F|P> <line>"
        text.lines()
            .filter_map(|l| l.splitn(4, ' ').nth(3))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    pub fn wait_for(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; status: {}",
                self.status()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `podkit run` to end by itself; its exit code.
    pub fn wait_exit(&self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        // `child` is only taken in drop.
        let pid = nix::unistd::Pid::from_raw(self.child.as_ref().expect("running").id() as i32);
        loop {
            if let Some(code) = self.exit.get() {
                return code;
            }
            match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => self.exit.set(Some(Some(code))),
                Ok(nix::sys::wait::WaitStatus::Signaled(..)) => self.exit.set(Some(None)),
                _ => {
                    assert!(
                        Instant::now() < deadline,
                        "podkit run did not end; status: {}",
                        self.status()
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// SIGKILLs the supervisor, as an OOM kill would, and reaps it.
    pub fn kill_supervisor(&self) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill");
        let _ = self.wait_exit();
    }

    /// Starts deleting the pod like Ctrl-C does (SIGTERM to `podkit run`), without waiting.
    pub fn begin_delete(&self) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }

    /// Deletes the pod like Ctrl-C does (unless it ended) and checks nothing of it remains.
    pub fn delete_and_check(&self) {
        if self.exit.get().is_none() {
            let pid = self.child.as_ref().expect("running").id() as i32;
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            let code = self.wait_exit();
            assert_eq!(
                code,
                Some(0),
                "a deleted pod's run exits 0: {}",
                self.output()
            );
            assert!(
                !self.dir().exists(),
                "a deleted pod leaves no state directory"
            );
        }
        // A pod that ended keeps its state dir (logs, status) until deleted; remove it here.
        let _ = std::fs::remove_dir_all(self.dir());
        assert!(
            !Path::new("/run/netns").join(&self.name).exists(),
            "netns pin remains"
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(!mounts.contains(&self.name), "mounts remain: {mounts}");
        if let Some(cgroup) = pod_cgroup(&self.name) {
            assert!(!cgroup.exists(), "cgroup remains: {}", cgroup.display());
        }
    }
}

/// Where the supervisor makes pod `name`'s cgroup (below its own, which is this test's), when
/// cgroup v2 is mounted.
pub fn pod_cgroup(name: &str) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mounts
        .lines()
        .find(|l| l.contains(" - cgroup2 "))?
        .split(' ')
        .nth(4)?
        .to_owned();
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(
        Path::new(&mount)
            .join(own.trim_start_matches('/'))
            .join(format!("podkit-default_{name}")),
    )
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && self.exit.get().is_none()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                // Still stopping (a long grace period, a test that failed half-way): the
                // supervisor is killed, and `podkit delete` cleans up after a dead supervisor
                // (its containers' processes, cgroups and mounts), before the state that
                // names them is removed below.
                let _ = child.kill();
                let _ = child.wait();
                let _ = Command::new(env!("CARGO_BIN_EXE_podkit"))
                    .args(["delete", "pod", &self.name])
                    .output();
            }
            let _ = child.wait();
        }
        let _ = netns::PodNamespaces::remove(&self.name, &self.dir().join("ns"));
        let _ = std::fs::remove_dir_all(self.dir());
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_file(&self.stderr);
        // The pod network's bridge and NAT table stay for the next pod; the last test to end
        // leaves none (gc deletes them once no pod is on them).
        let _gc = gc_lock();
        let _ = Command::new(env!("CARGO_BIN_EXE_podkit"))
            .arg("gc")
            .output();
    }
}

/// `podkit gc` is host-wide: it cleans up after every killed supervisor, another test's too. A
/// test that kills a supervisor and then checks what its own `gc` did holds this from the kill
/// to its checks, and every `gc` of the tests' helpers waits for it: an exclusive flock, so
/// it holds between the threads of a suite and between suites run at once. Released when
/// dropped.
pub fn gc_lock() -> std::fs::File {
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("podkit-tests-gc.lock"))
        .expect("open the tests' gc lock");
    file.lock().expect("lock the tests' gc lock");
    file
}

pub fn next() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `podkit ARGS`, which must succeed; its stdout.
pub fn podkit(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_podkit"))
        .args(args)
        .output()
        .expect("run podkit");
    assert!(
        out.status.success(),
        "podkit {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `podkit ARGS`, which must exit 1; its stderr.
pub fn podkit_fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_podkit"))
        .args(args)
        .output()
        .expect("run podkit");
    assert_eq!(out.status.code(), Some(1), "podkit {args:?} should exit 1");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A test's own storage (object and image stores) and state root, for `podkit` commands that
/// must not touch the host's (`PODKIT_STORAGE`, `PODKIT_ROOT`); removed with it.
pub struct Isolated {
    pub tmp: tempfile::TempDir,
}

impl Drop for Isolated {
    /// The pod network's bridge and NAT table stay for the next pod; the last test to end
    /// leaves none (gc deletes them once no pod is on them).
    /// What a failed test left running goes first: its controllers (which would make pods
    /// again), by the pid each one locked, then its pods.
    fn drop(&mut self) {
        let controllers = self.state().join("controllers");
        for pid_file in std::fs::read_dir(&controllers)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|ns| std::fs::read_dir(ns.path()).into_iter().flatten().flatten())
            .flat_map(|kind| {
                std::fs::read_dir(kind.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|object| object.path().join("pid"))
        {
            let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("controller") {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(5);
                while nix::sys::signal::kill(pid, None).is_ok() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        for pod in std::fs::read_dir(self.state().join("pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let key = pod.file_name().to_string_lossy().into_owned();
            if let Some((namespace, name)) = key.split_once('_')
                && !key.starts_with('.')
            {
                let _ = self.podkit(&[
                    "delete",
                    "pod",
                    name,
                    "-n",
                    namespace,
                    "--grace-period",
                    "0",
                ]);
            }
        }
        let _gc = gc_lock();
        let _ = self.podkit(&["gc"]);
    }
}

impl Isolated {
    /// `None` (the test skipped) when not root, which CI always is.
    pub fn new() -> Option<Isolated> {
        if !nix::unistd::geteuid().is_root() {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            eprintln!("skipped: not root");
            return None;
        }
        Some(Isolated {
            tmp: tempfile::tempdir().expect("tempdir"),
        })
    }

    pub fn storage(&self) -> PathBuf {
        self.tmp.path().join("storage")
    }

    pub fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// SIGKILLs the supervisor of pod `pod` (namespace default), as an OOM kill would, and
    /// waits (bounded) until it is gone: what it held is then left to `gc`.
    pub fn kill_pod_supervisor(&self, pod: &str) {
        let file = self
            .state()
            .join("pods")
            .join(format!("default_{pod}"))
            .join("supervisor.pid");
        let pid: i32 = std::fs::read_to_string(&file)
            .expect("supervisor.pid")
            .trim()
            .parse()
            .expect("pid");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the supervisor");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "the supervisor did not die");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn podkit(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_podkit"))
            .args(args)
            .env("PODKIT_STORAGE", self.storage())
            .env("PODKIT_ROOT", self.state())
            .output()
            .expect("run podkit")
    }

    /// `podkit ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.podkit(args);
        assert!(
            out.status.success(),
            "podkit {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `text` as `name` in the test's directory; its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.tmp.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf-8").to_owned()
    }
}

/// A command running in the background with its output collected as it comes: on a terminal
/// of its own (a pty: `podkit attach -it`), or with a pipe as its stdin. Killed when dropped.
pub struct Attached {
    child: Child,
    /// The pty's master, or the stdin pipe; `None` once closed.
    input: Option<Box<dyn std::io::Write + Send>>,
    output: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    /// Where the output ends, without a terminal (its stderr, collected apart).
    errors: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    /// The pty's master, to resize the terminal.
    terminal: Option<std::os::fd::OwnedFd>,
}

/// Copies `from` into a buffer until it ends (EOF, or EIO from a pty whose slave is closed).
fn collect(
    mut from: impl std::io::Read + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let filling = buffer.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = from.read(&mut chunk) {
            if n == 0 {
                break;
            }
            filling.lock().expect("lock").extend_from_slice(&chunk[..n]);
        }
    });
    buffer
}

impl Attached {
    /// Starts `command` on a new pty of `rows` x `columns`: its stdin, stdout and stderr.
    pub fn on_terminal(mut command: Command, rows: u16, columns: u16) -> Attached {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave = |pty: &nix::pty::OpenptyResult| {
            Stdio::from(pty.slave.try_clone().expect("dup the pty's slave"))
        };
        command
            .stdin(slave(&pty))
            .stdout(slave(&pty))
            .stderr(slave(&pty));
        let child = command.spawn().expect("start the command on a pty");
        // Only the child holds the slave now: its end is the master's EIO.
        drop(command);
        drop(pty.slave);
        let terminal = pty.master.try_clone().expect("dup the pty's master");
        let master = std::fs::File::from(pty.master);
        let output = collect(master.try_clone().expect("dup the pty's master"));
        Attached {
            child,
            input: Some(Box::new(master)),
            output,
            errors: Default::default(),
            terminal: Some(terminal),
        }
    }

    /// Starts `command` with pipes as its stdin, stdout and stderr.
    pub fn piped(mut command: Command) -> Attached {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the command");
        let input = child.stdin.take().map(|i| Box::new(i) as Box<_>);
        let output = collect(child.stdout.take().expect("stdout"));
        let errors = collect(child.stderr.take().expect("stderr"));
        Attached {
            child,
            input,
            output,
            errors,
            terminal: None,
        }
    }

    /// Resizes its terminal, as a terminal window does: the foreground process group of the
    /// session it controls gets SIGWINCH.
    pub fn resize(&self, rows: u16, columns: u16) {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let terminal = self.terminal.as_ref().expect("on a terminal");
        netns::set_window_size(terminal, &size).expect("resize the terminal");
    }

    pub fn write(&mut self, bytes: &[u8]) {
        let input = self.input.as_mut().expect("input open");
        input.write_all(bytes).expect("write to the command");
        input.flush().expect("flush");
    }

    /// Closes its stdin (a pipe's EOF).
    pub fn close_input(&mut self) {
        self.input = None;
    }

    /// Its output so far (on a terminal: everything the terminal showed).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().expect("lock")).into_owned()
    }

    pub fn errors(&self) -> String {
        String::from_utf8_lossy(&self.errors.lock().expect("lock")).into_owned()
    }

    /// Waits (30 s at most) until its output contains `text`; the output.
    pub fn wait_for(&self, text: &str) -> String {
        self.wait_until(&format!("{text:?} in its output"), |a| {
            a.output().contains(text)
        });
        self.output()
    }

    /// Waits (30 s at most) until `cond` holds.
    pub fn wait_until(&self, what: &str, cond: impl Fn(&Attached) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; output: {:?}; stderr: {:?}",
                self.output(),
                self.errors()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (30 s at most) for it to exit; its exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the command did not end; output: {:?}; stderr: {:?}",
                self.output(),
                self.errors()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs it, as a client that vanishes, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How many of process `pid`'s open files are ptys' master ends (`/dev/ptmx`, `/dev/pts/ptmx`).
pub fn pty_masters(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| target.to_string_lossy().ends_with("ptmx"))
        .count()
}

/// 2 MiB huge pages set aside for a test (`nr_hugepages` raised), given back when dropped,
/// also when the test fails: the count goes back to what it was. Held under a lock, so the
/// tests that use huge pages (in any test binary) take turns; other users of the host's huge
/// pages may still hold some, so a test asks only for what it set aside.
pub struct HugePages {
    /// What `nr_hugepages` was before.
    original: u64,
    /// What it is now (the kernel may have found fewer pages than asked).
    pub total: u64,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl HugePages {
    const NR: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

    /// Raises the 2 MiB pages by `more`; `None` (the test skipped, said why) when the kernel
    /// has no 2 MiB pages.
    pub fn set_aside(more: u64) -> Option<HugePages> {
        if !Path::new(Self::NR).exists() {
            eprintln!("skipped: no 2 MiB huge pages on this kernel");
            return None;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/tmp/podkit-test-hugepages.lock")
            .expect("lock file");
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("lock");
        let read = || -> u64 {
            std::fs::read_to_string(Self::NR)
                .expect("nr_hugepages")
                .trim()
                .parse()
                .expect("a number")
        };
        let original = read();
        let mut pages = HugePages {
            original,
            total: original,
            _lock: lock,
        };
        std::fs::write(Self::NR, (original + more).to_string()).expect("raise nr_hugepages");
        pages.total = read();
        assert!(
            pages.total >= original + more,
            "the kernel set aside {} of {more} more 2 MiB pages (memory too fragmented?)",
            pages.total - original
        );
        Some(pages)
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        if let Err(err) = std::fs::write(Self::NR, self.original.to_string()) {
            eprintln!("failed to restore nr_hugepages to {}: {err}", self.original);
        }
    }
}
