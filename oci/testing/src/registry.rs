//! Debian's `docker-registry` started on 127.0.0.1:<free port> with a config of the test's own
//! (storage in a temp dir, optional htpasswd, token auth and TLS), killed by pid when dropped; and a TCP
//! proxy in front of it that can hold a download half-way.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const REGISTRY: &str = "/usr/bin/docker-registry";

/// How to start a registry.
#[derive(Default)]
pub struct Options {
    /// A user allowed to push and pull (htpasswd with bcrypt).
    pub user: Option<(String, String)>,
    /// PEM certificate and key files: serve https.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Token authentication: the realm and signing certificate of a
    /// [`TokenServer`](crate::token::TokenServer).
    pub token: Option<(String, PathBuf)>,
}

/// A running registry.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Waits for `check` with a deadline; panics with `what` when it passes.
pub fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Registry {
    pub fn start(options: Options) -> Registry {
        assert!(
            std::path::Path::new(REGISTRY).exists(),
            "the image tests need Debian's docker-registry package ({REGISTRY})"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    \
             rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: podkit-tests\n",
            dir.path().join("data").display()
        );
        if let Some((cert, key)) = &options.tls {
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
        }
        if let Some((user, password)) = &options.user {
            let hash = bcrypt::hash(password, 4).expect("bcrypt");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("htpasswd");
            config += &format!(
                "auth:\n  htpasswd:\n    realm: podkit-tests\n    path: {}\n",
                htpasswd.display()
            );
        }
        if let Some((realm, cert)) = &options.token {
            config += &format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                crate::token::SERVICE,
                crate::token::ISSUER,
                cert.display()
            );
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("config");
        let log = dir.path().join("registry.log");
        let log_file = std::fs::File::create(&log).expect("log");
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("start docker-registry");
        let registry = Registry {
            child,
            addr,
            log,
            _dir: dir,
        };
        wait_for("the registry to listen", || {
            TcpStream::connect(&registry.addr).is_ok()
        });
        registry
    }

    /// Waits until the access log holds every request answered so far: the registry logs a
    /// request after answering it, so a client may be done before its line is written. A
    /// request of its own, once logged, comes after them (plain http registries only).
    pub fn sync_log(&self) {
        let marker = format!(
            "/v2/?sync={}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("time")
                .as_nanos()
        );
        let mut stream = TcpStream::connect(&self.addr).expect("connect");
        write!(
            stream,
            "GET {marker} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .expect("request");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        wait_for("the registry's access log", || self.log().contains(&marker));
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Successful GETs of a blob, from the registry's access log.
    pub fn blob_gets(&self, digest: &str) -> usize {
        let needle = format!("/blobs/{digest} HTTP/1.1\" 200");
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET ") && l.contains(&needle))
            .count()
    }

    /// Every successful GET of a blob.
    pub fn all_blob_gets(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| {
                l.contains("\"GET /v2/") && l.contains("/blobs/sha256:") && l.contains("\" 200 ")
            })
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pushes `oci:<layout>:<name>` to `docker://<dest>` with skopeo.
pub fn push(layout: &std::path::Path, name: &str, dest: &str, creds: Option<&str>, all: bool) {
    let source = format!("oci:{}:{name}", layout.display());
    let dest = format!("docker://{dest}");
    let mut args = vec!["copy", "--dest-tls-verify=false"];
    if all {
        args.push("--all");
    }
    if let Some(creds) = creds {
        args.extend(["--dest-creds", creds]);
    }
    args.extend([source.as_str(), dest.as_str()]);
    crate::images::skopeo(&args);
}

/// Whether downloads are held, and the condition variable that wakes them.
type Gate = Arc<(Mutex<bool>, Condvar)>;

/// A TCP proxy to a registry. While its gate is closed, a connection that has passed more than
/// `hold_after` bytes towards the client stops passing them until the gate opens: a download
/// is held half-way, and the small requests (manifests, configs) still go through.
pub struct Proxy {
    pub addr: String,
    gate: Gate,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: &str, hold_after: usize) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_owned();
        let (gate2, stop2) = (gate.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                std::thread::spawn(move || copy(client, server, None));
                let gate = gate2.clone();
                std::thread::spawn(move || copy(s2, c2, Some((gate, hold_after))));
            }
        });
        Proxy { addr, gate, stop }
    }

    /// Closes the gate: from now on long downloads are held.
    pub fn close(&self) {
        *self.gate.0.lock().expect("gate") = true;
    }

    /// Opens the gate: held downloads go on.
    pub fn open(&self) {
        *self.gate.0.lock().expect("gate") = false;
        self.gate.1.notify_all();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.open();
        let _ = TcpStream::connect(&self.addr); // wakes the accept loop to see `stop`
    }
}

fn copy(mut from: TcpStream, mut to: TcpStream, gate: Option<(Gate, usize)>) {
    let mut buf = [0u8; 16 * 1024];
    let mut passed = 0usize;
    loop {
        if let Some((gate, hold_after)) = &gate
            && passed > *hold_after
        {
            let (closed, cond) = &**gate;
            let mut closed = closed.lock().expect("gate");
            while *closed {
                closed = cond.wait(closed).expect("gate");
            }
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        passed += n;
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}
