//! End-to-end tests of `sidecars::proxy` with real parts: curl (Debian package `curl`), raw
//! sockets, HTTP/1.1 backends on 127.0.0.1 and the `podkit-proxy` binary for SIGTERM.

use std::io::Write;
use std::sync::atomic::Ordering;

use anyhow::{Context, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "proxy/support.rs"]
mod support;

#[path = "proxy/hardening.rs"]
mod hardening;

use support::{
    Backend, Binary, DEADLINE, Proxy, Serve, TestCa, checksum, curl, header, tls_server,
    tls_server_verifying, wait_until,
};

/// Hop-by-hop headers go, X-Forwarded-* and Forwarded are set (client values replaced), Host
/// stays as the client sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_headers() -> anyhow::Result<()> {
    let app = Backend::start("app").await?;
    let proxy = Proxy::start(&["--upstream", &app.url()]).await?;
    let got = curl(
        &[
            "-H",
            "Host: shop.example",
            "-H",
            "Connection: keep-alive, x-private",
            "-H",
            "X-Private: secret",
            "-H",
            "Keep-Alive: timeout=9",
            "-H",
            "X-Forwarded-For: 6.6.6.6",
            "-H",
            "X-Kept: yes",
        ],
        &proxy.url("/headers"),
    )
    .await?;
    ensure!(got.status == 200, "status {}", got.status);
    let seen: serde_json::Value = serde_json::from_slice(&got.body)?;
    assert_eq!(seen["host"], "shop.example");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "shop.example");
    assert_eq!(
        seen["forwarded"],
        "for=127.0.0.1;proto=http;host=\"shop.example\""
    );
    assert_eq!(seen["x-kept"], "yes");
    for gone in ["x-private", "keep-alive"] {
        assert!(seen.get(gone).is_none(), "{gone} forwarded: {seen}");
    }
    assert!(
        header(&got.headers, "x-resp-private").is_none(),
        "{}",
        got.headers
    );
    assert!(
        header(&got.headers, "keep-alive").is_none(),
        "{}",
        got.headers
    );
    proxy.stop().await
}

/// A 100 MiB chunked upload is streamed to the app and its echo streamed back, byte for byte;
/// the second request reuses the pooled upstream connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_large_chunked_bodies_both_ways() -> anyhow::Result<()> {
    let app = Backend::start("app").await?;
    let proxy = Proxy::start(&["--upstream", &app.url()]).await?;
    let dir = tempfile::tempdir()?;
    let upload = dir.path().join("upload");
    let mut file = std::fs::File::create(&upload)?;
    let mut x: u64 = 1;
    for _ in 0..(100 * 1024 * 1024 / 8) {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        file.write_all(&x.to_le_bytes())?;
    }
    drop(file);
    let download = dir.path().join("download");
    for _ in 0..2 {
        let got = curl(
            &[
                "-T",
                upload.to_str().context("utf-8 path")?,
                "-H",
                "Transfer-Encoding: chunked",
                "-o",
                download.to_str().context("utf-8 path")?,
            ],
            &proxy.url("/echo"),
        )
        .await?;
        ensure!(got.status == 200, "status {}", got.status);
        assert_eq!(checksum(&download)?, checksum(&upload)?);
    }
    proxy.stop().await
}

/// Upstream refused -> 502, upstream slower than `--upstream-timeout` -> 504, no route -> 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_and_no_route() -> anyhow::Result<()> {
    let app = Backend::start("app").await?;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?
    };
    let down = format!("/down=http://{closed}");
    let slow = format!("/slow={}", app.url());
    let proxy = Proxy::start(&[
        "--route",
        &down,
        "--route",
        &slow,
        "--upstream-timeout",
        "300ms",
    ])
    .await?;
    let got = curl(&[], &proxy.url("/down/x")).await?;
    assert_eq!(got.status, 502);
    assert_eq!(got.body, b"502 Bad Gateway\n");
    let got = curl(&[], &proxy.url("/slow")).await?;
    assert_eq!(got.status, 504);
    assert_eq!(got.body, b"504 Gateway Timeout\n");
    let got = curl(&[], &proxy.url("/elsewhere")).await?;
    assert_eq!(got.status, 404);
    assert_eq!(proxy.metrics.upstream_errors.load(Ordering::Relaxed), 2);
    proxy.stop().await
}

/// Routes: a host route wins, then the longest prefix, on segment boundaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_longest_prefix() -> anyhow::Result<()> {
    let (web, api, v2, admin) = (
        Backend::start("web").await?,
        Backend::start("api").await?,
        Backend::start("v2").await?,
        Backend::start("admin").await?,
    );
    let routes = [
        format!("/api={}", api.url()),
        format!("/api/v2={}", v2.url()),
        format!("admin.local/={}", admin.url()),
    ];
    let proxy = Proxy::start(&[
        "--upstream",
        &web.url(),
        "--route",
        &routes[0],
        "--route",
        &routes[1],
        "--route",
        &routes[2],
    ])
    .await?;
    for (host, path, want) in [
        ("x", "/", "web"),
        ("x", "/apix", "web"),
        ("x", "/api", "api"),
        ("x", "/api/v1/users", "api"),
        ("x", "/api/v2/users?q=1", "v2"),
        ("admin.local", "/api/v2", "admin"),
    ] {
        let got = curl(&["-H", &format!("Host: {host}")], &proxy.url(path)).await?;
        assert_eq!(String::from_utf8_lossy(&got.body), want, "{host}{path}");
    }
    proxy.stop().await
}

/// A request head over `--max-header-bytes` or with more than `--max-headers` fields gets 431;
/// a client that sends its head too slowly is disconnected at `--header-timeout`, one that
/// idles on a keep-alive connection at `--keepalive-timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_limits_and_slowloris() -> anyhow::Result<()> {
    let app = Backend::start("app").await?;
    let proxy = Proxy::start(&[
        "--upstream",
        &app.url(),
        "--max-header-bytes",
        "8192",
        "--header-timeout",
        "300ms",
        "--keepalive-timeout",
        "300ms",
    ])
    .await?;
    let big = "a".repeat(16 * 1024);
    let got = curl(&["-H", &format!("X-Big: {big}")], &proxy.url("/")).await?;
    assert_eq!(got.status, 431);
    let many: Vec<String> = (0..120).map(|i| format!("X-H{i}: {i}")).collect();
    let mut args = Vec::new();
    for h in &many {
        args.extend(["-H", h.as_str()]);
    }
    let got = curl(&args, &proxy.url("/")).await?;
    assert_eq!(got.status, 431);
    let got = curl(&args[..180], &proxy.url("/")).await?;
    assert_eq!(got.status, 200);

    let mut slow = TcpStream::connect(proxy.addr).await?;
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await?;
    let mut rest = Vec::new();
    // The proxy closes the connection: read_to_end ends (EOF or reset), well before DEADLINE.
    let read = tokio::time::timeout(DEADLINE, slow.read_to_end(&mut rest))
        .await
        .context("slowloris connection still open")?;
    drop(read);
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&rest)
    );

    // An idle keep-alive connection is closed too.
    let mut idle = TcpStream::connect(proxy.addr).await?;
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let mut all = Vec::new();
    tokio::time::timeout(DEADLINE, idle.read_to_end(&mut all))
        .await
        .context("idle keep-alive connection still open")??;
    let all = String::from_utf8_lossy(&all);
    assert!(all.starts_with("HTTP/1.1 200"), "{all}");
    assert!(all.ends_with("app"), "{all}");
    proxy.stop().await
}

/// `file:///DIR`: index.html, content types, ETag with If-None-Match and Last-Modified with
/// If-Modified-Since (once the file is a second old), byte ranges, no escape from the
/// directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("index.html"), "<h1>hi</h1>\n")?;
    std::fs::create_dir(dir.path().join("assets"))?;
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("assets/app.js"), &data)?;
    let upstream = format!("file://{}", dir.path().display());
    let proxy = Proxy::start(&["--upstream", &upstream]).await?;

    let got = curl(&[], &proxy.url("/")).await?;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, b"<h1>hi</h1>\n");
    assert_eq!(
        header(&got.headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    // Written just now: the validators are weak (a rewrite within the second would keep
    // them) and no condition is honoured; a second later they are strong.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let (etag, got) = loop {
        let got = curl(&[], &proxy.url("/")).await?;
        let etag = header(&got.headers, "etag").context("no ETag")?.to_owned();
        if !etag.starts_with("W/") {
            let got = curl(&["-H", &format!("If-None-Match: {etag}")], &proxy.url("/")).await?;
            break (etag, got);
        }
        let got = curl(&["-H", &format!("If-None-Match: {etag}")], &proxy.url("/")).await?;
        // The second may have passed since: the answer's own validator says which it was.
        let now = header(&got.headers, "etag").context("no ETag")?;
        if now.starts_with("W/") {
            assert_eq!(got.status, 200, "a weak ETag was honoured");
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the ETag stayed weak: {etag}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(got.status, 304, "{etag}");
    assert!(got.body.is_empty());
    let modified = header(&got.headers, "last-modified").context("no Last-Modified")?;
    let got = curl(
        &["-H", &format!("If-Modified-Since: {modified}")],
        &proxy.url("/"),
    )
    .await?;
    assert_eq!(got.status, 304);

    let got = curl(&[], &proxy.url("/assets/app.js")).await?;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, data);
    assert_eq!(
        header(&got.headers, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let got = curl(&["-r", "1000-1999"], &proxy.url("/assets/app.js")).await?;
    assert_eq!(got.status, 206);
    assert_eq!(got.body, &data[1000..2000]);
    assert_eq!(
        header(&got.headers, "content-range"),
        Some("bytes 1000-1999/100000")
    );
    let got = curl(&["-r", "200000-"], &proxy.url("/assets/app.js")).await?;
    assert_eq!(got.status, 416);
    let got = curl(&["--path-as-is"], &proxy.url("/../../etc/passwd")).await?;
    assert_eq!(got.status, 404);
    let got = curl(&[], &proxy.url("/assets")).await?;
    assert_eq!(got.status, 301);
    proxy.stop().await
}

/// The binary: SIGTERM stops accepting, a request in flight completes (200, full body), the
/// access log has its line, the process exits 0. A second run shows the drain is bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for (drain, release) in [("10s", true), ("300ms", false)] {
        // A fresh app per run: the first run releases its held requests for good.
        let app = Backend::start("app").await?;
        let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let down = format!("/down=http://{closed}");
        let stderr_path = dir.path().join(format!("stderr-{drain}"));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_podkit-proxy"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                &app.url(),
                "--route",
                &down,
                "--drain-timeout",
                drain,
            ])
            // The second run logs JSON, through the environment fallback.
            .env(
                "PODKIT_PROXY_ACCESS_LOG",
                if release { "combined" } else { "json" },
            )
            .env("PODKIT_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path)?)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().context("no pid")?;
        let mut addr = None;
        wait_until("the proxy listens", || {
            let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            addr = log
                .lines()
                .find(|l| l.contains("listening"))
                .and_then(|l| l.split("addr=").nth(1))
                .and_then(|a| a.split_whitespace().next())
                .map(str::to_owned);
            addr.is_some()
        })
        .await?;
        let addr = addr.context("no address")?;
        let got = curl(&["-A", "probe \"quoted\""], &format!("http://{addr}/down")).await?;
        assert_eq!(got.status, 502);
        let url = format!("http://{addr}/hold");
        let held = app.held.load(Ordering::SeqCst);
        let request = tokio::spawn({
            let url = url.clone();
            async move { curl(&[], &url).await }
        });
        wait_until("the app holds the request", || {
            app.held.load(Ordering::SeqCst) > held
        })
        .await?;
        let kill = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        ensure!(kill.success(), "kill -TERM {pid} failed");
        wait_until("the proxy drains", || {
            std::fs::read_to_string(&stderr_path)
                .unwrap_or_default()
                .contains("draining connections")
        })
        .await?;
        // Closed for new connections while the old one drains.
        ensure!(
            curl(&[], &url).await.is_err(),
            "a new request was accepted during the drain"
        );
        if release {
            app.release.cancel();
            let got = request.await??;
            assert_eq!(got.status, 200);
            assert_eq!(got.body, b"released\n");
        } else {
            ensure!(
                request.await?.is_err(),
                "the held request survived the drain timeout"
            );
        }
        let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
            .await
            .context("the proxy did not exit")??;
        assert!(output.status.success(), "{:?}", output.status);
        let log = String::from_utf8(output.stdout)?;
        if release {
            assert!(
                log.contains("\"GET /hold HTTP/1.1\" 200 9 \"-\" \"curl/"),
                "{log}"
            );
            // nginx combined, then duration, upstream and flags; quotes escaped.
            let line = log
                .lines()
                .find(|l| l.contains("/down"))
                .context("no access log line for /down")?;
            assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
            assert!(
                line.contains("\"GET /down HTTP/1.1\" 502 16 \"-\" \"probe \\x22quoted\\x22\" "),
                "{line}"
            );
            assert!(line.ends_with(&format!(" {closed} UF")), "{line}");
        } else {
            let stderr = std::fs::read_to_string(&stderr_path)?;
            assert!(stderr.contains("cut after the drain timeout"), "{stderr}");
            let down: serde_json::Value = serde_json::from_str(
                log.lines()
                    .find(|l| l.contains("/down"))
                    .context("no JSON access log line for /down")?,
            )?;
            assert_eq!(down["status"], 502);
            assert_eq!(down["flags"], "UF");
            assert_eq!(down["request"], "GET /down HTTP/1.1");
            assert_eq!(down["user_agent"], "probe \"quoted\"");
            // The request cut by the drain timeout is logged, not lost.
            let hold: serde_json::Value = serde_json::from_str(
                log.lines()
                    .find(|l| l.contains("/hold"))
                    .context("no JSON access log line for the cut /hold")?,
            )?;
            assert_eq!(hold["status"], 499);
            assert_eq!(hold["flags"], "DC");
        }
    }
    Ok(())
}

/// h2c with prior knowledge on the plain listener: curl speaks HTTP/2, the app HTTP/1.1, and a
/// large body streams through both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cleartext() -> anyhow::Result<()> {
    let app = Backend::start("app").await?;
    let proxy = Proxy::start(&["--upstream", &app.url()]).await?;
    let got = curl(&["--http2-prior-knowledge"], &proxy.url("/headers")).await?;
    assert!(got.headers.starts_with("HTTP/2 200"), "{}", got.headers);
    let seen: serde_json::Value = serde_json::from_slice(&got.body)?;
    assert_eq!(seen["host"], proxy.addr.to_string());
    assert_eq!(seen["x-forwarded-proto"], "http");

    let dir = tempfile::tempdir()?;
    let upload = dir.path().join("upload");
    let data: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i * 7 % 253) as u8)
        .collect();
    std::fs::write(&upload, &data)?;
    let download = dir.path().join("download");
    let got = curl(
        &[
            "--http2-prior-knowledge",
            "--data-binary",
            &format!("@{}", upload.display()),
            "-o",
            download.to_str().context("utf-8 path")?,
        ],
        &proxy.url("/echo"),
    )
    .await?;
    assert_eq!(got.status, 200);
    assert_eq!(checksum(&download)?, checksum(&upload)?);
    proxy.stop().await
}

/// TLS with a CA made at test time: ALPN picks h2 or HTTP/1.1, X-Forwarded-Proto is https,
/// and a certificate replaced on disk is served to new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_and_certificate_reload() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new(dir.path())?;
    let app = Backend::start("app").await?;
    let (cert, key) = (ca.cert.display().to_string(), ca.key.display().to_string());
    let proxy = Proxy::start(&["--upstream", &app.url(), "--cert", &cert, "--key", &key]).await?;
    let port = proxy.tls_addr.context("no TLS listener")?.port();
    let url = format!("https://localhost:{port}/headers");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let cacert = ca.ca.display().to_string();
    let tls = ["--cacert", cacert.as_str(), "--resolve", resolve.as_str()];

    let got = curl(&tls, &url).await?;
    assert!(got.headers.starts_with("HTTP/2 200"), "{}", got.headers);
    let seen: serde_json::Value = serde_json::from_slice(&got.body)?;
    assert_eq!(seen["x-forwarded-proto"], "https");
    let mut http1 = tls.to_vec();
    http1.push("--http1.1");
    let got = curl(&http1, &url).await?;
    assert!(got.headers.starts_with("HTTP/1.1 200"), "{}", got.headers);

    // The reload looks at the files at most once a second: poll until the new name shows.
    ca.issue("second")?;
    let mut verbose = tls.to_vec();
    verbose.extend(["-v", "-o", "/dev/null"]);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let output = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(&verbose)
            .arg(&url)
            .output()
            .await?;
        ensure!(output.status.success(), "curl failed after the reload");
        if String::from_utf8_lossy(&output.stderr).contains("CN=second") {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    proxy.stop().await
}

/// `--max-body-bytes`: an announced larger body gets 413 without reaching the app, a larger
/// chunked body is cut with 413; the health server answers and counts, `/readyz` fails once the
/// drain begins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limit_and_health() -> anyhow::Result<()> {
    let app = Backend::start("app").await?;
    let proxy = Proxy::start(&["--upstream", &app.url(), "--max-body-bytes", "1000"]).await?;
    let health = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let health_url = format!("http://{}", health.local_addr()?);
    let health_task = tokio::spawn(sidecars::proxy::run_health(
        health,
        proxy.metrics.clone(),
        proxy.shutdown.clone(),
    ));
    let small = "x".repeat(1000);
    let got = curl(&["--data-binary", &small], &proxy.url("/echo")).await?;
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), 1000);
    let big = "x".repeat(5000);
    let got = curl(&["--data-binary", &big], &proxy.url("/echo")).await?;
    assert_eq!(got.status, 413);
    // Expect: 100-continue: the proxy answers 100 once it reads the body, the app gets it all.
    let got = curl(
        &["--data-binary", &small, "-H", "Expect: 100-continue"],
        &proxy.url("/sink"),
    )
    .await?;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, b"1000");
    assert!(got.headers.starts_with("HTTP/1.1 100"), "{}", got.headers);
    let got = curl(
        &["--data-binary", &big, "-H", "Transfer-Encoding: chunked"],
        &proxy.url("/sink"),
    )
    .await?;
    assert_eq!(got.status, 413);

    let got = curl(&[], &format!("{health_url}/healthz")).await?;
    assert_eq!(got.status, 200);
    let got = curl(&[], &format!("{health_url}/readyz")).await?;
    assert_eq!(got.status, 200);
    let got = curl(&[], &format!("{health_url}/metrics")).await?;
    let metrics = String::from_utf8(got.body)?;
    assert!(
        metrics.contains("podkit_proxy_requests_total 4\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("podkit_proxy_responses_total{code=\"4xx\"} 2\n"),
        "{metrics}"
    );
    proxy.metrics.draining.store(true, Ordering::Relaxed);
    let got = curl(&[], &format!("{health_url}/readyz")).await?;
    assert_eq!(got.status, 503);
    proxy.stop().await?;
    tokio::time::timeout(DEADLINE, health_task)
        .await
        .context("the health server did not stop")??;
    Ok(())
}

/// An HTTP/1.1 Upgrade (as WebSocket does) is passed on, the 101 comes back, and bytes flow both
/// ways through the tunnel; the drain waits for the tunnel and cuts it at the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_tunnel() -> anyhow::Result<()> {
    let app = Backend::start("app").await?;
    let proxy = Proxy::start(&["--upstream", &app.url(), "--drain-timeout", "200ms"]).await?;
    let mut stream = TcpStream::connect(proxy.addr).await?;
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut byte))
            .await
            .context("no 101")??;
        ensure!(
            n == 1,
            "closed before the 101: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head)?;
    ensure!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(header(&head, "upgrade"), Some("websocket"));
    for message in [&b"ping"[..], &[0u8, 1, 2, 255], &[b'x'; 100_000]] {
        stream.write_all(message).await?;
        let mut echo = vec![0u8; message.len()];
        tokio::time::timeout(DEADLINE, stream.read_exact(&mut echo))
            .await
            .context("no echo")??;
        assert_eq!(echo, message);
    }
    // The tunnel outlives the shutdown only until the drain timeout.
    proxy.stop().await?;
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest))
        .await
        .context("the tunnel survived the drain")??;
    Ok(())
}

/// HTTP/2 drain: after shutdown the client is told GOAWAY, the stream in flight still
/// completes, then the proxy stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_drain_completes_streams_in_flight() -> anyhow::Result<()> {
    let app = Backend::start("app").await?;
    let proxy = Proxy::start(&["--upstream", &app.url()]).await?;
    let url = proxy.url("/hold");
    let request = tokio::spawn(async move { curl(&["--http2-prior-knowledge"], &url).await });
    wait_until("the app holds the request", || {
        app.held.load(Ordering::SeqCst) == 1
    })
    .await?;
    proxy.shutdown.cancel();
    wait_until("the listener is closed", || {
        std::net::TcpStream::connect(proxy.addr).is_err()
    })
    .await?;
    app.release.cancel();
    let got = request.await??;
    assert!(got.headers.starts_with("HTTP/2 200"), "{}", got.headers);
    assert_eq!(got.body, b"released\n");
    proxy.stop().await
}

/// Response trailers reach a client that accepts them (`TE: trailers`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_through() -> anyhow::Result<()> {
    use http_body_util::BodyExt;

    let app = Backend::start("app").await?;
    let proxy = Proxy::start(&["--upstream", &app.url()]).await?;
    let stream = TcpStream::connect(proxy.addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::get("/trailers")
        .header("host", "x")
        .header("te", "trailers")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let response = tokio::time::timeout(DEADLINE, sender.send_request(request))
        .await
        .context("no response")??;
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(DEADLINE, response.into_body().collect())
        .await
        .context("no body")??;
    let trailers = body.trailers().cloned().context("no trailers")?;
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(&body.to_bytes()[..], b"data");
    proxy.stop().await
}

/// `--max-connections 1`: a second client waits until the first connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections() -> anyhow::Result<()> {
    let app = Backend::start("app").await?;
    let proxy = Proxy::start(&["--upstream", &app.url(), "--max-connections", "1"]).await?;
    let first = TcpStream::connect(proxy.addr).await?;
    wait_until("the first connection is served", || {
        proxy.metrics.open_connections.load(Ordering::SeqCst) == 1
    })
    .await?;
    let url = proxy.url("/name");
    let second = tokio::spawn(async move { curl(&[], &url).await });
    // Whenever the second client's handshake completes, it is in the backlog, not accepted.
    assert_eq!(proxy.metrics.connections.load(Ordering::SeqCst), 1);
    assert!(!second.is_finished(), "the second client was served");
    drop(first);
    let got = second.await??;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, b"app");
    assert_eq!(proxy.metrics.connections.load(Ordering::SeqCst), 2);
    proxy.stop().await
}

/// A `unix:/PATH` upstream: requests reach an app on a unix socket, Host kept; a socket nobody
/// listens on gives 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_upstream() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("app.sock");
    let _app = Backend::start_unix("unix-app", &socket).await?;
    let upstream = format!("unix:{}", socket.display());
    let missing = format!("/gone=unix:{}", dir.path().join("none.sock").display());
    let proxy = Proxy::start(&["--upstream", &upstream, "--route", &missing]).await?;
    for _ in 0..3 {
        let got = curl(&[], &proxy.url("/name")).await?;
        assert_eq!(got.body, b"unix-app");
    }
    let got = curl(&["-H", "Host: blog.example"], &proxy.url("/headers")).await?;
    let seen: serde_json::Value = serde_json::from_slice(&got.body)?;
    assert_eq!(seen["host"], "blog.example");
    let got = curl(&[], &proxy.url("/gone")).await?;
    assert_eq!(got.status, 502);
    proxy.stop().await
}

/// `https://` upstreams checked against `--upstream-ca` (a CA made at test time), HTTP/2 by ALPN
/// or HTTP/1.1 when the app offers only that, the certificate checked against the upstream's
/// name (`localhost`, also the SNI) while the app sees the client's Host; `h2c://` to an
/// HTTP/2-only app, bodies streamed, trailers (gRPC's status) back to an HTTP/2 client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_h2c_upstreams() -> anyhow::Result<()> {
    use http_body_util::BodyExt;

    let dir = tempfile::tempdir()?;
    let ca = TestCa::new(dir.path())?;
    let h2 = Backend::start_with(
        "tls-h2",
        Serve::Tls(tls_server(&ca.cert, &ca.key, &[b"h2", b"http/1.1"])?),
    )
    .await?;
    let h1 = Backend::start_with(
        "tls-h1",
        Serve::Tls(tls_server(&ca.cert, &ca.key, &[b"http/1.1"])?),
    )
    .await?;
    let grpc = Backend::start_with("h2c", Serve::H2c).await?;
    let cacert = ca.ca.display().to_string();
    let upstream = format!("https://localhost:{}", h2.addr.port());
    let routes = [
        format!("h1.example/=https://127.0.0.1:{}", h1.addr.port()),
        format!("grpc.example/=h2c://{}", grpc.addr),
    ];
    let proxy = Proxy::start(&[
        "--upstream",
        &upstream,
        "--route",
        &routes[0],
        "--route",
        &routes[1],
        "--upstream-ca",
        &cacert,
    ])
    .await?;
    let path = "/headers";
    for (host, version) in [
        ("shop.example", "HTTP/2.0"),
        ("h1.example", "HTTP/1.1"),
        ("grpc.example", "HTTP/2.0"),
    ] {
        for _ in 0..2 {
            let got = curl(&["-H", &format!("Host: {host}")], &proxy.url(path)).await?;
            ensure!(
                got.status == 200,
                "{path}: status {}: {}",
                got.status,
                String::from_utf8_lossy(&got.body)
            );
            let seen: serde_json::Value = serde_json::from_slice(&got.body)
                .with_context(|| format!("{path}: {}", String::from_utf8_lossy(&got.body)))?;
            assert_eq!(seen[":version"], version, "{host}: {seen}");
            assert_eq!(seen["host"], host, "{host}: {seen}");
            assert_eq!(seen["x-forwarded-proto"], "http", "{host}: {seen}");
            if version == "HTTP/2.0" {
                assert_eq!(seen[":authority"], host, "{host}: {seen}");
            }
        }
    }

    let upload = dir.path().join("upload");
    let data: Vec<u8> = (0..2 * 1024 * 1024u32)
        .map(|i| (i * 13 % 251) as u8)
        .collect();
    std::fs::write(&upload, &data)?;
    let download = dir.path().join("download");
    for host in ["shop.example", "h1.example", "grpc.example"] {
        let got = curl(
            &[
                "-H",
                &format!("Host: {host}"),
                "--data-binary",
                &format!("@{}", upload.display()),
                "-o",
                download.to_str().context("utf-8 path")?,
            ],
            &proxy.url("/echo"),
        )
        .await?;
        assert_eq!(got.status, 200, "{host}");
        assert_eq!(checksum(&download)?, checksum(&upload)?, "{host}");
    }

    // gRPC's shape: HTTP/2 from the client to the app, the status in a trailer.
    let stream = TcpStream::connect(proxy.addr).await?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await?;
    tokio::spawn(conn);
    let request = hyper::Request::post("http://grpc.example/trailers")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"req")))?;
    let response = tokio::time::timeout(DEADLINE, sender.send_request(request))
        .await
        .context("no response")??;
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(DEADLINE, response.into_body().collect())
        .await
        .context("no body")??;
    let trailers = body.trailers().cloned().context("no trailers")?;
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(&body.to_bytes()[..], b"data");
    proxy.stop().await
}

/// An `https://` upstream whose certificate does not chain to `--upstream-ca`: 502 `UF`, and
/// the log says why (the TLS error); the binary, so the log is the real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_upstream_certificate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (trusted, other) = (dir.path().join("trusted"), dir.path().join("other"));
    std::fs::create_dir(&trusted)?;
    std::fs::create_dir(&other)?;
    let (trusted, other) = (TestCa::new(&trusted)?, TestCa::new(&other)?);
    let app = Backend::start_with(
        "untrusted",
        Serve::Tls(tls_server(&other.cert, &other.key, &[b"h2", b"http/1.1"])?),
    )
    .await?;
    let upstream = format!("https://127.0.0.1:{}", app.addr.port());
    let cacert = trusted.ca.display().to_string();
    let proxy = Binary::start(
        &["--upstream", &upstream, "--upstream-ca", &cacert],
        dir.path(),
    )
    .await?;
    let got = curl(&[], &format!("http://{}/x", proxy.addr)).await?;
    assert_eq!(got.status, 502);
    assert_eq!(got.body, b"502 Bad Gateway\n");
    let stderr = proxy.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("upstream request failed"))
        .with_context(|| format!("no log line for the failure: {stderr}"))?;
    // Both test CAs are named alike: rustls finds the trusted one, whose signature fails.
    assert!(
        line.contains("invalid peer certificate: BadSignature"),
        "{line}"
    );
    assert!(line.contains(&upstream), "{line}");
    let (status, log) = proxy.stop().await?;
    assert!(status.success(), "{status:?}");
    let access = log
        .lines()
        .find(|l| l.contains("GET /x"))
        .with_context(|| format!("no access log line: {log}"))?;
    assert!(access.ends_with(&format!(" {upstream} UF")), "{access}");
    Ok(())
}

/// An `https://` upstream that asks for a client certificate: refused (502) without
/// `--upstream-client-cert`, served with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_client_certificate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new(dir.path())?;
    let (client_cert, client_key) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    ca.issue_client(&client_cert, &client_key)?;
    let app = Backend::start_with(
        "mtls",
        Serve::Tls(tls_server_verifying(&ca.cert, &ca.key, &ca.ca)?),
    )
    .await?;
    let upstream = format!("https://localhost:{}", app.addr.port());
    let cacert = ca.ca.display().to_string();
    let without = Proxy::start(&["--upstream", &upstream, "--upstream-ca", &cacert]).await?;
    let got = curl(&[], &without.url("/name")).await?;
    assert_eq!(got.status, 502);
    without.stop().await?;

    let (cert, key) = (
        client_cert.display().to_string(),
        client_key.display().to_string(),
    );
    let with = Proxy::start(&[
        "--upstream",
        &upstream,
        "--upstream-ca",
        &cacert,
        "--upstream-client-cert",
        &cert,
        "--upstream-client-key",
        &key,
    ])
    .await?;
    let got = curl(&[], &with.url("/name")).await?;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, b"mtls");
    with.stop().await
}

/// Access log lines are buffered (one `write` for the requests that finish together), but not
/// held: each line is on stdout while the proxy runs, before the next request is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_are_written_while_running() -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;

    let dir = tempfile::tempdir()?;
    let app = Backend::start("app").await?;
    let mut proxy = Binary::start(&["--upstream", &app.url()], dir.path()).await?;
    let stdout = proxy.child.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    for path in ["/first", "/second"] {
        let got = curl(&[], &format!("http://{}{path}", proxy.addr)).await?;
        assert_eq!(got.status, 200);
        let line = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .with_context(|| format!("no access log line for {path} while the proxy runs"))??
            .context("stdout closed")?;
        assert!(
            line.contains(&format!("\"GET {path} HTTP/1.1\" 200 ")),
            "{line}"
        );
    }
    let (status, _) = proxy.stop().await?;
    assert!(status.success(), "{status:?}");
    Ok(())
}
