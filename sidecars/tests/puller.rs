//! End-to-end tests of `sidecars::puller` with real parts: an HTTP origin on 127.0.0.1, real
//! files and archives, the `podkit-puller` binary for exit codes, and a reader walking the tree
//! while versions are published.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::Parser;
use sidecars::puller::{Args, Config, Metrics};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[path = "puller/support.rs"]
mod support;

#[path = "puller/git.rs"]
mod git;
#[path = "puller/hostile.rs"]
mod hostile;
#[path = "puller/https.rs"]
mod https;
#[path = "puller/validators.rs"]
mod validators;

use support::{Origin, RawEntry, free_addr, http_status, raw_tar, tar_gz, versions, wait_until};

const DEADLINE: Duration = Duration::from_secs(20);

fn config(url: &str, dest: &Path, extra: &[&str]) -> anyhow::Result<Config> {
    let mut argv = vec![
        "podkit-puller".to_owned(),
        "--url".to_owned(),
        url.to_owned(),
        "--dest".to_owned(),
        dest.display().to_string(),
        "--period".to_owned(),
        "20ms".to_owned(),
        "--retry-initial".to_owned(),
        "20ms".to_owned(),
        "--retry-max".to_owned(),
        "100ms".to_owned(),
    ];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    Ok(Config::try_from(Args::try_parse_from(argv)?)?)
}

/// A puller running in-process until the returned token is cancelled.
struct Running {
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), sidecars::puller::Error>>,
}

impl Running {
    fn start(config: Config) -> Self {
        let metrics = Arc::new(Metrics::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(sidecars::puller::run_with_metrics(
            config,
            metrics.clone(),
            shutdown.clone(),
        ));
        Self {
            metrics,
            shutdown,
            task,
        }
    }

    fn count(&self, field: fn(&Metrics) -> &AtomicU64) -> u64 {
        field(&self.metrics).load(Ordering::SeqCst)
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        (&mut self.task).await??;
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The whole error chain, to check it names the cause.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// First sync, 304s that write nothing, an update, identical content under a new ETag (not
/// republished), `--keep`, the relative link, and the exec hook fired once per version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_update_unchanged_keep_and_hook() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let hook_log = dir.path().join("hook.log");
    let origin = Origin::start("v1\n", Some("\"e1\"")).await?;
    let hook = format!(
        "echo \"$PODKIT_VERSION $PODKIT_PATH $(cat app.txt)\" >> {}",
        hook_log.display()
    );
    let puller = Running::start(config(
        &origin.url("/files/app.txt"),
        &dest,
        &["--keep", "1", "--exec", &hook],
    )?);
    let current = dest.join("current/app.txt");

    wait_until("the first version", DEADLINE, || {
        read(&current).as_deref() == Some("v1\n")
    })
    .await?;
    let link = std::fs::read_link(dest.join("current"))?;
    ensure!(
        link.starts_with(".versions") && link.is_relative(),
        "link {link:?}"
    );
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&current)?);

    // Unchanged remote: 304s, nothing rewritten.
    let seen = origin.not_modified();
    wait_until("three 304 answers", DEADLINE, || {
        origin.not_modified() >= seen + 3
    })
    .await?;
    ensure!(puller.count(|m| &m.publishes) == 1, "republished on 304");
    ensure!(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&current)?) == inode);
    ensure!(versions(&dest)?.len() == 1);

    // Update.
    origin.set("v2\n", Some("\"e2\""));
    wait_until("the second version", DEADLINE, || {
        read(&current).as_deref() == Some("v2\n")
    })
    .await?;

    // Same bytes under a new ETag: downloaded, recognised by sha256, not published.
    origin.set("v2\n", Some("\"e3\""));
    let requests = origin.requests();
    wait_until("a few more syncs", DEADLINE, || {
        origin.not_modified() >= 3 && origin.requests() >= requests + 4
    })
    .await?;
    ensure!(
        puller.count(|m| &m.publishes) == 2,
        "identical content republished"
    );

    // --keep 1: the published version and one old one.
    for n in 3..=5 {
        origin.set(format!("v{n}\n"), Some(&format!("\"x{n}\"")));
        wait_until("the next version", DEADLINE, || {
            read(&current) == Some(format!("v{n}\n"))
        })
        .await?;
    }
    wait_until("five publishes counted (after pruning)", DEADLINE, || {
        puller.count(|m| &m.publishes) == 5
    })
    .await?;
    let left = versions(&dest)?;
    ensure!(left.len() == 2, "versions left: {left:?}");
    ensure!(puller.count(|m| &m.failures) == 0);

    // One hook run per version, in the version's directory, with its id and path.
    wait_until("the fifth hook run", DEADLINE, || {
        read(&hook_log).is_some_and(|log| log.lines().count() >= 5)
    })
    .await?;
    puller.stop().await?;
    let log = read(&hook_log).context("hook log")?;
    let lines: Vec<&str> = log.lines().collect();
    ensure!(lines.len() == 5, "hook runs: {lines:?}");
    for (line, n) in lines.iter().zip(1..) {
        let mut parts = line.split(' ');
        let (id, path, content) = (parts.next(), parts.next(), parts.next());
        ensure!(content == Some(&format!("v{n}")[..]), "hook line {line:?}");
        ensure!(
            path.is_some_and(|p| id.is_some_and(|id| p.ends_with(&format!(".versions/{id}")))),
            "hook line {line:?}"
        );
    }
    Ok(())
}

/// A reader walking the tree (resolve the link once, then read every file) during many
/// archive updates never sees a torn or missing file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_never_sees_a_torn_tree() -> anyhow::Result<()> {
    const UPDATES: usize = 15;
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let site = |n: usize| -> anyhow::Result<Vec<u8>> {
        let body = format!("{n:04}\n").repeat(4096);
        tar_gz(&[
            ("index.html", body.as_bytes()),
            ("assets/app.js", body.as_bytes()),
            ("assets/deep/x.css", body.as_bytes()),
        ])
    };
    let origin = Origin::start(site(0)?, Some("\"0\"")).await?;
    let puller = Running::start(config(
        &origin.url("/site.tar.gz"),
        &dest,
        // Nothing is pruned under the reader: a reader descheduled for a long time must not
        // find its version gone (that is what `--keep` is for, sized by the user).
        &["--keep", "100"],
    )?);
    wait_until("the first version", DEADLINE, || {
        dest.join("current/index.html").exists()
    })
    .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let walks = Arc::new(AtomicU64::new(0));
    let reader = {
        let (dest, stop, walks) = (dest.clone(), stop.clone(), walks.clone());
        std::thread::spawn(move || -> anyhow::Result<()> {
            while !stop.load(Ordering::SeqCst) {
                let target = std::fs::read_link(dest.join("current"))?;
                let root: PathBuf = dest.join(target);
                let mut first = None;
                for file in ["index.html", "assets/app.js", "assets/deep/x.css"] {
                    let content = std::fs::read_to_string(root.join(file))
                        .with_context(|| format!("{file} missing in {root:?}"))?;
                    ensure!(content.len() == 5 * 4096, "{file} torn in {root:?}");
                    let tag = content[..4].to_owned();
                    ensure!(content == format!("{tag}\n").repeat(4096), "{file} mixed");
                    ensure!(
                        first.get_or_insert(tag.clone()) == &tag,
                        "files of different versions in {root:?}"
                    );
                }
                walks.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        })
    };
    for n in 1..=UPDATES {
        origin.set(site(n)?, Some(&format!("\"{n}\"")));
        let expect = format!("{n:04}\n");
        wait_until("the next version", DEADLINE, || {
            read(dest.join("current/assets/deep/x.css")).is_some_and(|c| c.starts_with(&expect))
        })
        .await?;
    }
    let before = walks.load(Ordering::SeqCst);
    wait_until("a few more walks", DEADLINE, || {
        walks.load(Ordering::SeqCst) > before + 10
    })
    .await?;
    stop.store(true, Ordering::SeqCst);
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    // The link swap is visible a moment before the publish is counted (after pruning).
    wait_until("every publish counted", DEADLINE, || {
        puller.count(|m| &m.publishes) == UPDATES as u64 + 1
    })
    .await?;
    ensure!(
        versions(&dest)?.len() == UPDATES + 1,
        "{:?}",
        versions(&dest)?
    );
    puller.stop().await
}

/// Hostile archives are refused naming the entry; the published version stays and no staging
/// tree is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_archives_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let archive = dir.path().join("site.tar");
    let url = format!("file://{}", archive.display());
    let file = |name| RawEntry {
        name,
        kind: tar::EntryType::Regular,
        link: None,
        content: b"x",
    };
    let link = |name, kind, target| RawEntry {
        name,
        kind,
        link: Some(target),
        content: b"",
    };

    std::fs::write(&archive, raw_tar(&[file("good.txt")]))?;
    sidecars::puller::run(
        config(&url, &dest, &["--one-time"])?,
        CancellationToken::new(),
    )
    .await?;
    ensure!(read(dest.join("current/good.txt")).as_deref() == Some("x"));
    let published = std::fs::read_link(dest.join("current"))?;

    let cases: Vec<(&str, Vec<RawEntry<'_>>)> = vec![
        ("/etc/evil", vec![file("/etc/evil")]),
        ("../evil", vec![file("ok"), file("../evil")]),
        ("a/../../evil", vec![file("a/../../evil")]),
        (
            "up",
            vec![link("up", tar::EntryType::Symlink, "../../outside")],
        ),
        (
            "abs",
            vec![link("abs", tar::EntryType::Symlink, "/etc/passwd")],
        ),
        (
            "e",
            vec![
                file("d/f"),
                link("d/a", tar::EntryType::Symlink, ".."),
                link("e", tar::EntryType::Symlink, "d/a/.."),
            ],
        ),
        (
            "hard",
            vec![link("hard", tar::EntryType::Link, "../../etc/passwd")],
        ),
        (
            "dev",
            vec![RawEntry {
                name: "dev",
                kind: tar::EntryType::Char,
                link: None,
                content: b"",
            }],
        ),
    ];
    for (entry, entries) in cases {
        std::fs::write(&archive, raw_tar(&entries))?;
        let err = sidecars::puller::run(
            config(&url, &dest, &["--one-time"])?,
            CancellationToken::new(),
        )
        .await
        .err()
        .with_context(|| format!("archive with {entry:?} was published"))?;
        let message = chain(&err);
        ensure!(
            message.contains(&format!("refused archive entry {entry:?}")),
            "{entry}: {message}"
        );
        ensure!(std::fs::read_link(dest.join("current"))? == published);
        ensure!(versions(&dest)?.len() == 1, "{:?}", versions(&dest)?);
        ensure!(!dir.path().join("evil").exists() && !dir.path().join("outside").exists());
    }
    Ok(())
}

/// The server down, then back: failures are retried with backoff, `/healthz` answers 503 until
/// the first sync and 200 after it; `/metrics` counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_then_back_and_health() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let origin = Origin::start("hello", None).await?;
    origin.set_up(false);
    let health = free_addr()?;
    let token = dir.path().join("token");
    std::fs::write(&token, "secret-1\n")?;
    let puller = Running::start(config(
        &origin.url("/hello.txt"),
        &dest,
        &[
            "--health-addr",
            &health.to_string(),
            "--bearer-token-file",
            &token.display().to_string(),
            "--header",
            "X-Test: 1",
        ],
    )?);
    wait_until("three failures", DEADLINE, || {
        puller.count(|m| &m.failures) >= 3
    })
    .await?;
    ensure!(!dest.join("current").exists());
    let mut status = None;
    for _ in 0..100 {
        status = http_status(health, "/healthz").await;
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(
        status == Some(503),
        "healthz before the first sync: {status:?}"
    );

    origin.set_up(true);
    wait_until("the first version", DEADLINE, || {
        read(dest.join("current/hello.txt")).as_deref() == Some("hello")
    })
    .await?;
    // The link swap is visible a moment before the sync is recorded.
    let deadline = std::time::Instant::now() + DEADLINE;
    while http_status(health, "/healthz").await != Some(200) {
        ensure!(
            std::time::Instant::now() < deadline,
            "healthz never became 200"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ensure!(origin.state.authorization.lock().expect("lock").as_deref() == Some("Bearer secret-1"));
    // The token file is read again for every sync.
    std::fs::write(&token, "secret-2\n")?;
    wait_until("the new token", DEADLINE, || {
        origin.state.authorization.lock().expect("lock").as_deref() == Some("Bearer secret-2")
    })
    .await?;
    let metrics = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(health).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        stream.read_to_string(&mut out).await?;
        out
    };
    ensure!(
        metrics.contains("podkit_puller_publishes_total 1"),
        "{metrics}"
    );
    ensure!(
        metrics.contains("\npodkit_puller_bytes_total "),
        "{metrics}"
    );
    ensure!(
        metrics.contains("\npodkit_puller_failures_total "),
        "{metrics}"
    );
    puller.stop().await
}

/// `--max-failures` stops the puller; `--max-bytes`, `--sha256` and `--timeout` fail a sync and
/// the published version stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_failures_max_bytes_and_digest() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let origin = Origin::start("0123456789", None).await?;
    let url = origin.url("/data.bin");
    origin.set_up(false);
    let err = sidecars::puller::run(
        config(&url, &dest, &["--max-failures", "3"])?,
        CancellationToken::new(),
    )
    .await
    .err()
    .context("ran on after 3 failures")?;
    ensure!(
        chain(&err).starts_with("3 consecutive syncs"),
        "{}",
        chain(&err)
    );

    origin.set_up(true);
    let err = sidecars::puller::run(
        config(&url, &dest, &["--one-time", "--max-bytes", "9"])?,
        CancellationToken::new(),
    )
    .await
    .err()
    .context("--max-bytes ignored")?;
    ensure!(
        chain(&err).contains("larger than --max-bytes 9"),
        "{}",
        chain(&err)
    );
    ensure!(std::fs::read_dir(dest.join(".tmp"))?.count() == 0);

    let digest = "84d89877f0d4041efb6bf91a16f0248f2fd573e6af05c19f96bedb9f882f7882";
    sidecars::puller::run(
        config(&url, &dest, &["--one-time", "--sha256", digest])?,
        CancellationToken::new(),
    )
    .await?;
    origin.set("tampered!!", None);
    let err = sidecars::puller::run(
        config(&url, &dest, &["--one-time", "--sha256", digest])?,
        CancellationToken::new(),
    )
    .await
    .err()
    .context("--sha256 ignored")?;
    ensure!(chain(&err).contains("sha256 mismatch"), "{}", chain(&err));
    ensure!(read(dest.join("current/data.bin")).as_deref() == Some("0123456789"));

    // A hung server: --timeout ends the sync.
    origin.state.hang.store(true, Ordering::SeqCst);
    let err = sidecars::puller::run(
        config(&url, &dest, &["--one-time", "--timeout", "300ms"])?,
        CancellationToken::new(),
    )
    .await
    .err()
    .context("--timeout ignored")?;
    ensure!(
        chain(&err).contains("took longer than 300ms"),
        "{}",
        chain(&err)
    );
    ensure!(read(dest.join("current/data.bin")).as_deref() == Some("0123456789"));
    Ok(())
}

/// The binary's `--one-time` exit codes: 0 after a sync, 1 with the reason, 2 for bad flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_exit_codes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let origin = Origin::start("payload", None).await?;
    let bin = env!("CARGO_BIN_EXE_podkit-puller");
    let run = |url: String, extra: &[&str]| {
        let dest = dest.clone();
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            Command::new(bin)
                .args(["--url", &url, "--dest"])
                .arg(&dest)
                .arg("--one-time")
                .args(extra)
                .env("PODKIT_LOG", "warn")
                .output()
        })
    };

    let out = run(origin.url("/p.txt"), &[]).await??;
    ensure!(out.status.code() == Some(0), "{out:?}");
    ensure!(read(dest.join("current/p.txt")).as_deref() == Some("payload"));

    origin.set_status(hyper::StatusCode::NOT_FOUND);
    let out = run(origin.url("/p.txt"), &[]).await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "{out:?}");
    ensure!(stderr.contains("404"), "{stderr}");
    ensure!(read(dest.join("current/p.txt")).as_deref() == Some("payload"));

    let out = run("ftp://example/x".to_owned(), &[]).await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(2), "{out:?}");
    ensure!(stderr.contains("--url"), "{stderr}");
    Ok(())
}

/// `--webhook` (retried through two 500s) and `--signal` fire once per published version,
/// never for an unchanged source; the `file://` source is re-read every sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_and_signal_once_per_version() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let source = dir.path().join("config.json");
    let pidfile = dir.path().join("app.pid");
    let hup_log = dir.path().join("hup.log");
    std::fs::write(&source, "{\"n\": 1}")?;
    let receiver = Origin::start("", None).await?;
    receiver.state.fail_posts.store(2, Ordering::SeqCst);

    // The "app": a shell that logs every SIGUSR1 (not SIGHUP, which a test run started under
    // nohup passes on ignored, and a shell cannot trap an ignored signal). Its trap is set before
    // its pid file is written: a signal that came first would end it.
    let script = format!(
        "trap 'echo hup >> {}' USR1; echo $$ > {}; while :; do sleep 0.02; done",
        hup_log.display(),
        pidfile.display()
    );
    let mut app = Command::new("/bin/sh").args(["-c", &script]).spawn()?;
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _app = Kill(&mut app);
    wait_until("the app's pid file", DEADLINE, || {
        read(&pidfile).is_some_and(|p| p.ends_with('\n'))
    })
    .await?;

    let puller = Running::start(config(
        &format!("file://{}", source.display()),
        &dest,
        &[
            "--webhook",
            &receiver.url("/reload"),
            "--signal",
            &format!("SIGUSR1:{}", pidfile.display()),
        ],
    )?);
    let hups = || read(&hup_log).map_or(0, |log| log.lines().count());
    for n in 1..=3 {
        if n > 1 {
            // Replaced by rename, as a deploy would: the puller never reads a half-written file.
            let tmp = dir.path().join("config.json.tmp");
            std::fs::write(&tmp, format!("{{\"n\": {n}}}"))?;
            std::fs::rename(&tmp, &source)?;
        }
        wait_until("the signal for the next version", DEADLINE, || hups() == n).await?;
        let posts = receiver.state.posts.lock().expect("lock").len();
        ensure!(posts == n, "{posts} webhook calls after version {n}");
    }
    // Unchanged source: more syncs, no more hooks.
    let syncs = puller.count(|m| &m.syncs);
    wait_until("five more syncs", DEADLINE, || {
        puller.count(|m| &m.syncs) >= syncs + 5
    })
    .await?;
    ensure!(hups() == 3 && receiver.state.posts.lock().expect("lock").len() == 3);
    ensure!(puller.count(|m| &m.hook_failures) == 0);
    let last = receiver.state.posts.lock().expect("lock")[2].clone();
    let last: serde_json::Value = serde_json::from_str(&last)?;
    let version = last["version"].as_str().context("version")?;
    ensure!(std::fs::read_link(dest.join("current"))? == Path::new(".versions").join(version));
    ensure!(read(dest.join("current/config.json")).as_deref() == Some("{\"n\": 3}"));
    puller.stop().await
}

/// A zip archive is unpacked with its symlinks; hostile zips are refused naming the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_archives() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let good = support::zip(
        &[("index.html", b"home"), ("a/b.txt", b"bee")],
        &[("link", "a/b.txt")],
    )?;
    let origin = Origin::start(good, None).await?;
    let url = origin.url("/site.zip");
    sidecars::puller::run(
        config(&url, &dest, &["--one-time"])?,
        CancellationToken::new(),
    )
    .await?;
    ensure!(read(dest.join("current/index.html")).as_deref() == Some("home"));
    ensure!(read(dest.join("current/link")).as_deref() == Some("bee"));
    let published = std::fs::read_link(dest.join("current"))?;

    let cases = [
        ("../evil", support::zip(&[("../evil", b"x")], &[])?),
        ("/abs", support::zip(&[("/abs", b"x")], &[])?),
        ("up", support::zip(&[], &[("up", "../../outside")])?),
    ];
    for (entry, body) in cases {
        origin.set(body, None);
        let err = sidecars::puller::run(
            config(&url, &dest, &["--one-time"])?,
            CancellationToken::new(),
        )
        .await
        .err()
        .with_context(|| format!("zip with {entry:?} was published"))?;
        let message = chain(&err);
        ensure!(
            message.contains(&format!("refused archive entry {entry:?}")),
            "{entry}: {message}"
        );
        ensure!(std::fs::read_link(dest.join("current"))? == published);
        ensure!(versions(&dest)?.len() == 1, "{:?}", versions(&dest)?);
    }
    Ok(())
}

/// A write that fails mid-download (the file size limit of `ulimit -f` with SIGXFSZ ignored,
/// standing in for a full disk) fails the sync with the reason; the old version stays published
/// and no temporary file is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_write_keeps_the_old_version() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let origin = Origin::start(vec![b'a'; 1024], None).await?;
    let bin = env!("CARGO_BIN_EXE_podkit-puller");
    let run = || {
        let (url, dest) = (origin.url("/data.bin"), dest.clone());
        tokio::task::spawn_blocking(move || {
            // 64 blocks: at least 32 KiB whatever the shell's block size.
            Command::new("/bin/sh")
                .args([
                    "-c",
                    "trap '' XFSZ; ulimit -f 64; exec \"$0\" --url \"$1\" --dest \"$2\" --one-time",
                    bin,
                    &url,
                ])
                .arg(&dest)
                .env("PODKIT_LOG", "warn")
                .output()
        })
    };
    let out = run().await??;
    ensure!(out.status.code() == Some(0), "{out:?}");
    let published = std::fs::read_link(dest.join("current"))?;

    origin.set(vec![b'b'; 1024 * 1024], None);
    let out = run().await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "{out:?}");
    ensure!(stderr.contains("failed to write the download"), "{stderr}");
    ensure!(std::fs::read_link(dest.join("current"))? == published);
    ensure!(read(dest.join("current/data.bin")).is_some_and(|c| c.len() == 1024));
    ensure!(std::fs::read_dir(dest.join(".tmp"))?.count() == 0);
    ensure!(versions(&dest)?.len() == 1, "{:?}", versions(&dest)?);
    Ok(())
}

/// `--mode copy`: `DEST/current` is a directory updated in place; files the new version lacks
/// are removed; identical content is recognised after a restart too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_mode_updates_in_place() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let v1 = tar_gz(&[("a.txt", b"a1"), ("dir/b.txt", b"b1"), ("old.txt", b"old")])?;
    let v2 = tar_gz(&[
        ("a.txt", b"a2"),
        ("dir/b.txt", b"b2"),
        ("dir/new.txt", b"new"),
    ])?;
    let origin = Origin::start(v1, None).await?;
    let url = origin.url("/site.tgz");
    let once = |metrics: Arc<Metrics>| {
        let config = config(&url, &dest, &["--one-time", "--mode", "copy"]);
        async move {
            sidecars::puller::run_with_metrics(config?, metrics, CancellationToken::new()).await?;
            anyhow::Ok(())
        }
    };
    once(Arc::default()).await?;
    let current = dest.join("current");
    ensure!(
        std::fs::symlink_metadata(&current)?.is_dir(),
        "current is not a directory"
    );
    ensure!(read(current.join("old.txt")).as_deref() == Some("old"));

    origin.set(v2, None);
    once(Arc::default()).await?;
    ensure!(read(current.join("a.txt")).as_deref() == Some("a2"));
    ensure!(read(current.join("dir/b.txt")).as_deref() == Some("b2"));
    ensure!(read(current.join("dir/new.txt")).as_deref() == Some("new"));
    ensure!(!current.join("old.txt").exists(), "old.txt left behind");
    ensure!(versions(&dest)? == [".copied"], "{:?}", versions(&dest)?);

    // A restart with the same content: recognised, nothing published.
    let metrics = Arc::new(Metrics::default());
    once(metrics.clone()).await?;
    ensure!(metrics.publishes.load(Ordering::SeqCst) == 0);
    Ok(())
}

/// The binary keeps syncing until SIGTERM, then exits 0 with the last version published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let origin = Origin::start("one", Some("\"1\"")).await?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_podkit-puller"))
        .args(["--url", &origin.url("/f.txt"), "--period", "20ms", "--dest"])
        .arg(&dest)
        .env("PODKIT_LOG", "warn")
        .spawn()?;
    let pid = child.id().to_string();
    let outcome = async {
        wait_until("the first version", DEADLINE, || {
            read(dest.join("current/f.txt")).as_deref() == Some("one")
        })
        .await?;
        origin.set("two", Some("\"2\""));
        wait_until("the second version", DEADLINE, || {
            read(dest.join("current/f.txt")).as_deref() == Some("two")
        })
        .await?;
        ensure!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()?
                .success()
        );
        let status = tokio::task::spawn_blocking(move || child.wait()).await??;
        ensure!(status.code() == Some(0), "exit {status:?}");
        Ok(())
    }
    .await;
    if outcome.is_err() {
        // Only our own child, by its pid.
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    }
    outcome
}

/// A local directory (`file:///dir`) is published as a tree, links included; an unchanged
/// directory is not republished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_directory_source() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let src = dir.path().join("site");
    std::fs::create_dir_all(src.join("css"))?;
    std::fs::write(src.join("index.html"), "home")?;
    std::fs::write(src.join("css/app.css"), "body{}")?;
    std::os::unix::fs::symlink("index.html", src.join("default.html"))?;
    let puller = Running::start(config(&format!("file://{}", src.display()), &dest, &[])?);
    wait_until("the first version", DEADLINE, || {
        read(dest.join("current/css/app.css")).as_deref() == Some("body{}")
    })
    .await?;
    ensure!(std::fs::read_link(dest.join("current/default.html"))? == Path::new("index.html"));
    ensure!(read(dest.join("current/default.html")).as_deref() == Some("home"));

    let syncs = puller.count(|m| &m.syncs);
    wait_until("five more syncs", DEADLINE, || {
        puller.count(|m| &m.syncs) >= syncs + 5
    })
    .await?;
    ensure!(
        puller.count(|m| &m.publishes) == 1,
        "unchanged directory republished"
    );

    std::fs::write(src.join("new.html"), "new")?;
    wait_until("the second version", DEADLINE, || {
        read(dest.join("current/new.html")).as_deref() == Some("new")
    })
    .await?;
    ensure!(puller.count(|m| &m.failures) == 0);
    puller.stop().await
}
