//! End-to-end tests of `sidecars::tail` with real parts: files, `logrotate` (Debian package
//! `logrotate`), the `podkit-tail` binary and a Loki-compatible receiver on 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::Parser;
use sidecars::tail::{Args, Config, Metrics};
use tokio_util::sync::CancellationToken;

#[path = "tail/support.rs"]
mod support;

#[path = "tail/hardening.rs"]
mod hardening;

use support::{
    Logrotate, Loki, Tailer, TestCa, Writer, check_numbers, line, wait_until, wait_until_async,
};

const LINES: u64 = 20_000;
const DEADLINE: Duration = Duration::from_secs(60);

/// A writer appends numbered lines while logrotate rotates the file four times; the binary
/// ships every line exactly once.
fn rotate_while_writing(mode: &str, glob_suffix: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("app.log");
    std::fs::write(&log, "")?;
    let glob = format!("{}{glob_suffix}", log.display());
    let tailer = Tailer::spawn(
        &[
            "--path",
            &glob,
            "--rotate-wait",
            "1s",
            "--poll-interval",
            "100ms",
        ],
        &dir.path().join("tail.stderr"),
    )?;
    let rotate = Logrotate::new(dir.path(), &log, mode)?;
    tailer.wait_following()?;
    let writer = Writer::start(&log, 0, LINES, 20, mode == "create");
    for k in 1..=4 {
        wait_until("writer progress", DEADLINE, || {
            writer.written() >= k * LINES / 5
        })?;
        if mode == "copytruncate" {
            // A line written between logrotate's copy and its truncation is in no file at all
            // (logrotate(8) warns about it): no tailer can ship it. Keep the writer out of that
            // window; the tailer may still have unread lines when the file is copied.
            writer.pause(true);
            rotate.rotate()?;
            writer.pause(false);
        } else {
            rotate.rotate()?;
        }
    }
    let written = writer.finish()?;
    ensure!(written == LINES);
    let got = wait_until("every line shipped", DEADLINE, || {
        tailer.count() >= LINES as usize
    });
    let (code, lines) = tailer.terminate()?;
    let stderr = std::fs::read_to_string(dir.path().join("tail.stderr")).unwrap_or_default();
    if let Ok(keep) = std::env::var("PODKIT_TEST_KEEP_STDERR") {
        let _ = std::fs::write(format!("{keep}.{mode}"), &stderr);
        let _ = std::fs::write(format!("{keep}.{mode}.lines"), lines.join("\n"));
    }
    let got = check_numbers(&lines, LINES, true).and(got);
    got.with_context(|| format!("stderr of podkit-tail:\n{}", tail_of(&stderr)))?;
    ensure!(code == Some(0), "exit code {code:?}");
    Ok(())
}

fn tail_of(s: &str) -> &str {
    let start = s.len().saturating_sub(4000);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    &s[start..]
}

#[test]
fn logrotate_create_mode_ships_every_line_once() -> anyhow::Result<()> {
    rotate_while_writing("create", "")
}

#[test]
fn logrotate_copytruncate_mode_ships_every_line_once() -> anyhow::Result<()> {
    // The glob also matches the copies: they are recognised and read only past what was read.
    rotate_while_writing("copytruncate", "*")
}

/// SIGKILL in the middle of writing, a rotation while the tailer is dead, a restart: every line
/// arrives at least once. Then SIGTERM checkpoints everything, and a third run ships nothing
/// again.
#[test]
fn sigkill_restart_resumes_from_checkpoint() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("app.log");
    let state = dir.path().join("state.json");
    std::fs::write(&log, "")?;
    let log_s = log.display().to_string();
    let state_s = state.display().to_string();
    let args = [
        "--path",
        &log_s,
        "--state",
        &state_s,
        "--checkpoint-interval",
        "50ms",
        "--rotate-wait",
        "1s",
        "--poll-interval",
        "100ms",
    ];
    let rotate = Logrotate::new(dir.path(), &log, "create")?;

    let first = Tailer::spawn(&args, &dir.path().join("tail1.stderr"))?;
    first.wait_following()?;
    let writer = Writer::start(&log, 0, LINES, 20, true);
    wait_until("writer progress", DEADLINE, || {
        writer.written() >= LINES / 4
    })?;
    rotate.rotate()?;
    wait_until("first run ships some lines", DEADLINE, || {
        first.count() >= LINES as usize / 3
    })?;
    wait_until("a checkpoint", DEADLINE, || state.exists())?;
    let mut lines = first.kill()?;
    let state_at_kill = std::fs::read_to_string(&state).unwrap_or_default();
    // Rotated while the tailer is dead: the restart must find the renamed file by its inode.
    rotate.rotate()?;
    wait_until("writer progress", DEADLINE, || {
        writer.written() >= LINES * 3 / 4
    })?;

    let second = Tailer::spawn(&args, &dir.path().join("tail2.stderr"))?;
    // A file created and rotated away entirely while the tailer is down is out of reach of a
    // `app.log` glob, so the next rotation waits until the second run is following.
    wait_until("second run ships lines", DEADLINE, || second.count() > 0)?;
    rotate.rotate()?;
    writer.finish()?;
    let before = lines.len();
    let all = wait_until("every line shipped after the restart", DEADLINE, || {
        let mut seen = std::collections::HashSet::new();
        for l in lines.iter().chain(second.snapshot().iter()) {
            seen.insert(support::number(l));
        }
        seen.len() >= LINES as usize
    });
    let (code, second_lines) = second.terminate()?;
    lines.extend(second_lines);
    let stderr = std::fs::read_to_string(dir.path().join("tail2.stderr")).unwrap_or_default();
    let verdict = check_numbers(&lines, LINES, false).and(all);
    if let Ok(keep) = std::env::var("PODKIT_TEST_KEEP_STDERR")
        && verdict.is_err()
    {
        let one = std::fs::read_to_string(dir.path().join("tail1.stderr")).unwrap_or_default();
        let _ = std::fs::write(
            format!("{keep}.sigkill"),
            format!(
                "{one}\n=== state at kill\n{state_at_kill}\n=== second run\n{stderr}\n=== first run printed {before} lines, second {}; files: {:?}",
                lines.len() - before,
                std::fs::read_dir(dir.path())
                    .map(|d| d
                        .flatten()
                        .map(|e| (e.file_name(), e.metadata().map(|m| m.len()).unwrap_or(0)))
                        .collect::<Vec<_>>())
                    .unwrap_or_default()
            ),
        );
    }
    verdict.with_context(|| {
        format!(
            "{before} lines before the kill; stderr:\n{}",
            tail_of(&stderr)
        )
    })?;
    ensure!(code == Some(0), "SIGTERM exit code {code:?}");

    // Everything shipped was checkpointed on SIGTERM: a third run resumes at the end.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)?
        .write_all(format!("{}\n", line(LINES)).as_bytes())?;
    let third = Tailer::spawn(&args, &dir.path().join("tail3.stderr"))?;
    wait_until("the new line", DEADLINE, || third.count() >= 1)?;
    let (_, third_lines) = third.terminate()?;
    ensure!(
        third_lines == [line(LINES)],
        "third run re-shipped lines: {} lines",
        third_lines.len()
    );
    Ok(())
}

use std::io::Write as _;

fn config(argv: &[&str]) -> Config {
    let mut full = vec!["podkit-tail"];
    full.extend_from_slice(argv);
    Config::try_from(Args::parse_from(full)).expect("valid flags")
}

async fn start_loki() -> anyhow::Result<(Loki, String, CancellationToken)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let loki = Loki::default();
    let stop = CancellationToken::new();
    tokio::spawn(loki.clone().run(listener, stop.clone()));
    Ok((loki, url, stop))
}

/// Loki goes down while lines are written: the tailer retries, pauses reading (bounded memory),
/// and once Loki is back every line arrives exactly once with the right labels. `/healthz` and
/// `/metrics` answer meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_down_then_back_loses_nothing_with_bounded_memory() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("app.log");
    std::fs::write(&log, "")?;
    let (loki, url, stop_loki) = start_loki().await?;
    let health = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let glob = format!("{}/*.log", dir.path().display());
    let health_s = health.to_string();
    let cfg = config(&[
        "--path",
        &glob,
        "--loki",
        &url,
        "--label",
        "app=web",
        "--label",
        "team=a",
        "--batch-lines",
        "500",
        "--batch-timeout",
        "20ms",
        "--buffer-chunks",
        "2",
        "--retry-initial",
        "10ms",
        "--retry-max",
        "100ms",
        "--health-addr",
        &health_s,
    ]);
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(sidecars::tail::run_with_metrics(
        cfg,
        metrics.clone(),
        shutdown.clone(),
    ));

    // Up: a first part arrives.
    let writer = Writer::start(&log, 0, 1000, 0, false);
    writer.finish()?;
    wait_until_async("first lines at Loki", DEADLINE, || {
        loki.lines().len() >= 1000
    })
    .await?;

    // Down: write much more than the buffers hold.
    loki.down.store(true, Ordering::Release);
    let writer = Writer::start(&log, 1000, LINES - 1000, 0, false);
    writer.finish()?;
    wait_until_async("retries while Loki is down", DEADLINE, || {
        metrics.retries.load(Ordering::Relaxed) >= 5
    })
    .await?;
    // Reading pauses: what was read but not accepted stays within the buffers, whatever was
    // written: 2 chunks in the channel, one batch in flight (under 500 lines plus one chunk), one
    // chunk waiting to be sent (a chunk is at most 1024 lines), and the lines of one read (256
    // KiB since the reader reads a chunk's bytes at once: this said 64 KiB, and a CI run
    // held 6075 lines, over that bound's 5725).
    let in_memory =
        metrics.lines_read.load(Ordering::Relaxed) - metrics.lines_sent.load(Ordering::Relaxed);
    ensure!(
        in_memory <= 500 + 4 * 1024 + 256 * 1024 / 58,
        "{in_memory} lines held in memory while Loki is down"
    );
    ensure!(
        metrics.lines_read.load(Ordering::Relaxed) < LINES,
        "reading did not pause"
    );
    let (status, body) =
        tokio::task::spawn_blocking(move || support::http_get(health, "/metrics")).await??;
    ensure!(
        status == 200 && body.contains("podkit_tail_retries_total"),
        "metrics: {status} {body}"
    );
    ensure!(body.contains("podkit_tail_lag_bytes"), "no lag in metrics");
    let (status, _) =
        tokio::task::spawn_blocking(move || support::http_get(health, "/healthz")).await??;
    ensure!(status == 200);

    // Back: everything arrives, once.
    loki.down.store(false, Ordering::Release);
    wait_until_async("every line at Loki", DEADLINE, || {
        loki.lines().len() >= LINES as usize
    })
    .await?;
    shutdown.cancel();
    task.await??;
    stop_loki.cancel();
    let state = loki.state.lock().expect("loki lock");
    ensure!(
        state.invalid.is_empty(),
        "invalid pushes: {:?}",
        state.invalid
    );
    ensure!(state.refused > 0);
    for (labels, _, _) in &state.entries {
        ensure!(
            labels.get("app").map(String::as_str) == Some("web"),
            "labels {labels:?}"
        );
        ensure!(
            labels.get("team").map(String::as_str) == Some("a"),
            "labels {labels:?}"
        );
        ensure!(
            labels
                .get("filename")
                .is_some_and(|f| f.ends_with("app.log")),
            "labels {labels:?}"
        );
    }
    drop(state);
    check_numbers(&loki.lines(), LINES, true)
}

/// Stack traces are joined, long lines are split without loss, a partial line waits for its
/// newline, and a file created later that matches the glob is picked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiline_long_lines_and_new_files() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (loki, url, stop_loki) = start_loki().await?;
    let glob = format!("{}/**/*.log", dir.path().display());
    let cfg = config(&[
        "--path",
        &glob,
        "--loki",
        &url,
        "--multiline-start",
        r"^\d{4}-",
        "--max-line-bytes",
        "1000",
        "--batch-timeout",
        "10ms",
    ]);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(sidecars::tail::run(cfg, shutdown.clone()));

    let trace = "2024-01-01 ERROR boom\njava.lang.IllegalStateException: x\n\tat a.b(C.java:1)\n\tat d.e(F.java:2)\n";
    let long: String = (0..3500)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mut f = std::fs::File::create(dir.path().join("app.log"))?;
    write!(
        f,
        "{trace}2024-01-01 INFO long {long}\n2024-01-01 INFO partial"
    )?;
    f.flush()?;
    wait_until_async("trace and long line", DEADLINE, || loki.lines().len() >= 5).await?;
    write!(f, " done\n2024-01-01 INFO last\n")?;
    std::fs::create_dir(dir.path().join("later"))?;
    std::fs::write(
        dir.path().join("later/new.log"),
        "2024-01-02 INFO from a new file\n",
    )?;
    wait_until_async("new file's line", DEADLINE, || {
        loki.lines().iter().any(|l| l.contains("from a new file"))
            && loki.lines().iter().any(|l| l.contains("last"))
    })
    .await?;
    shutdown.cancel();
    task.await??;
    stop_loki.cancel();

    let lines = loki.lines();
    ensure!(lines[0] == trace.trim_end(), "joined trace: {:?}", lines[0]);
    let parts: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("long") || l.starts_with(|c: char| c.is_ascii_lowercase()))
        .collect();
    ensure!(
        parts.iter().all(|p| p.len() <= 1000),
        "a part is longer than --max-line-bytes"
    );
    let joined: String = parts.iter().map(|p| p.as_str()).collect();
    ensure!(
        joined == format!("2024-01-01 INFO long {long}"),
        "long line not reassembled: {} parts",
        parts.len()
    );
    ensure!(
        lines.iter().any(|l| l == "2024-01-01 INFO partial done"),
        "partial line: {lines:?}"
    );
    Ok(())
}

async fn start_recorder(
    reply: &'static str,
) -> anyhow::Result<(support::Recorder, String, CancellationToken)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let rec = support::Recorder::default();
    let stop = CancellationToken::new();
    tokio::spawn(rec.clone().run(listener, reply, stop.clone()));
    Ok((rec, url, stop))
}

/// `--http` posts gzip-compressed JSON lines with file, offset, time and message;
/// `--elasticsearch` posts `_bulk` NDJSON (an action line, then the document).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_elasticsearch_sinks() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("app.log");
    let data: String = (0..100).map(|n| format!("{}\n", line(n))).collect();
    std::fs::write(&log, &data)?;
    let glob = log.display().to_string();

    let (http, url, stop_http) = start_recorder("").await?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(sidecars::tail::run(
        config(&["--path", &glob, "--http", &url]),
        shutdown.clone(),
    ));
    wait_until_async("100 JSON lines", DEADLINE, || {
        http.json_lines().len() >= 100
    })
    .await?;
    shutdown.cancel();
    task.await??;
    stop_http.cancel();
    ensure!(
        http.requests
            .lock()
            .expect("lock")
            .iter()
            .all(|r| r.1.as_deref() == Some("gzip")),
        "not gzip"
    );
    let docs = http.json_lines();
    for (n, doc) in docs.iter().enumerate() {
        ensure!(doc["message"] == line(n as u64), "doc {n}: {doc}");
        ensure!(
            doc["offset"] == (n * (line(0).len() + 1)) as u64,
            "doc {n}: {doc}"
        );
        ensure!(
            doc["file"] == glob.as_str() && doc["time"].is_string(),
            "doc {n}: {doc}"
        );
    }

    let (es, url, stop_es) = start_recorder(r#"{"took":1,"errors":false,"items":[]}"#).await?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(sidecars::tail::run(
        config(&[
            "--path",
            &glob,
            "--elasticsearch",
            &url,
            "--es-index",
            "app",
        ]),
        shutdown.clone(),
    ));
    wait_until_async("200 bulk lines", DEADLINE, || es.json_lines().len() >= 200).await?;
    shutdown.cancel();
    task.await??;
    stop_es.cancel();
    ensure!(
        es.requests
            .lock()
            .expect("lock")
            .iter()
            .all(|r| r.0 == "/_bulk"),
        "not /_bulk"
    );
    let lines = es.json_lines();
    for pair in lines.chunks(2) {
        ensure!(pair[0]["index"]["_index"] == "app", "action {}", pair[0]);
        ensure!(
            pair[1]["@timestamp"].is_string() && pair[1]["message"].is_string(),
            "doc {}",
            pair[1]
        );
    }
    Ok(())
}

/// An `https://` sink with `--ca-file` and a client certificate. The receiver first presents a
/// certificate from a CA the tailer does not trust: the send fails, the log names the TLS cause
/// and the batch is retried. Then it presents one from the `--ca-file` CA and requires the
/// tailer's `--client-cert`: every line arrives, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_sink_trusts_only_its_ca_file_and_retries() -> anyhow::Result<()> {
    use std::sync::Mutex;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("app.log");
    const COUNT: u64 = 200;
    let data: String = (0..COUNT).map(|n| format!("{}\n", line(n))).collect();
    std::fs::write(&log, &data)?;

    let ca = TestCa::new("podkit tail test CA")?;
    let stranger = TestCa::new("a CA the tailer does not trust")?;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem)?;
    let (cert, key) = ca.issue("podkit-tail")?;
    let (cert_file, key_file) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    std::fs::write(&cert_file, cert)?;
    std::fs::write(&key_file, key)?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://127.0.0.1:{}/ingest", listener.local_addr()?.port());
    let tls = Arc::new(Mutex::new(stranger.server_config(None)?));
    let refused = Arc::new(Mutex::new(Vec::new()));
    let receiver = support::Recorder::default();
    let stop = CancellationToken::new();
    tokio::spawn(receiver.clone().run_tls(
        listener,
        tls.clone(),
        refused.clone(),
        "",
        stop.clone(),
    ));

    let stderr = dir.path().join("stderr");
    let path = |p: &std::path::Path| p.display().to_string();
    let tailer = Tailer::spawn(
        &[
            "--path",
            &path(&log),
            "--http",
            &url,
            "--ca-file",
            &path(&ca_file),
            "--client-cert",
            &path(&cert_file),
            "--client-key",
            &path(&key_file),
            "--retry-max",
            "200ms",
        ],
        &stderr,
    )?;
    let log_text = || std::fs::read_to_string(&stderr).unwrap_or_default();
    wait_until_async("the TLS error in the tailer's log", DEADLINE, || {
        log_text()
            .lines()
            .filter(|l| l.contains("failed to ship batch; retrying"))
            .count()
            >= 2
    })
    .await
    .with_context(|| format!("tailer log:\n{}", log_text()))?;
    let failure = log_text()
        .lines()
        .find(|l| l.contains("failed to ship batch; retrying"))
        .unwrap_or_default()
        .to_owned();
    ensure!(
        failure.contains(&url) && failure.contains("invalid peer certificate: UnknownIssuer"),
        "the error does not name the URL and the TLS cause: {failure}"
    );
    ensure!(
        receiver.json_lines().is_empty(),
        "lines were accepted over an untrusted connection"
    );

    *tls.lock().expect("tls lock") = ca.server_config(Some(&ca))?;
    wait_until_async("every line over TLS", DEADLINE, || {
        receiver.json_lines().len() as u64 >= COUNT
    })
    .await
    .with_context(|| format!("tailer log:\n{}", log_text()))?;
    let (code, _) = tokio::task::spawn_blocking(move || tailer.terminate()).await??;
    stop.cancel();
    ensure!(code == Some(0), "exit code {code:?}");
    let messages: Vec<String> = receiver
        .json_lines()
        .iter()
        .map(|doc| doc["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    check_numbers(&messages, COUNT, true)?;
    ensure!(
        !refused.lock().expect("refused lock").is_empty(),
        "the receiver saw no refused handshake"
    );

    // A CA file that cannot be read stops the tailer at startup, naming the file.
    let missing = dir.path().join("missing-ca.pem");
    let err = sidecars::tail::run(
        config(&[
            "--path",
            &path(&log),
            "--loki",
            "https://127.0.0.1:1",
            "--ca-file",
            &path(&missing),
        ]),
        CancellationToken::new(),
    )
    .await
    .err()
    .context("a missing --ca-file was accepted")?;
    let chain = format!("{:#}", anyhow::Error::from(err));
    ensure!(
        chain.contains("failed to set up TLS for https://127.0.0.1:1/loki/api/v1/push")
            && chain.contains(&format!("{missing:?}")),
        "{chain}"
    );
    Ok(())
}
