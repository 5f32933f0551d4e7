//! `https://` sources against a TLS origin on 127.0.0.1 with certificates from a CA made at test
//! time: `--ca-file`, an untrusted server, and a server that requires a client certificate.

use super::*;
use support::TestCa;

/// A first sync and a `304` over https with `--ca-file`; a server whose CA is not the one
/// trusted fails with the TLS cause named, and publishes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_ca_file_and_an_untrusted_server() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new(dir.path(), "trusted")?;
    let leaf = ca.issue(dir.path(), "server")?;
    let origin =
        Origin::start_tls("v1\n", Some("\"e1\""), TestCa::server_config(&leaf, None)?).await?;
    let ca_file = ca.ca.display().to_string();

    let dest = dir.path().join("vol");
    let puller = Running::start(config(
        &origin.https_url("/app.txt"),
        &dest,
        &["--ca-file", &ca_file],
    )?);
    wait_until("the first version over https", DEADLINE, || {
        read(dest.join("current/app.txt")).as_deref() == Some("v1\n")
    })
    .await?;
    wait_until("a 304 over https", DEADLINE, || origin.not_modified() >= 1).await?;
    origin.set("v2\n", Some("\"e2\""));
    wait_until("the second version over https", DEADLINE, || {
        read(dest.join("current/app.txt")).as_deref() == Some("v2\n")
    })
    .await?;
    // The counter follows the symlink swap.
    wait_until("two publishes counted", DEADLINE, || {
        puller.count(|m| &m.publishes) == 2
    })
    .await?;
    puller.stop().await?;

    // Another CA's server: the handshake fails and the error says why.
    let other = TestCa::new(dir.path(), "other")?;
    let other_leaf = other.issue(dir.path(), "impostor")?;
    let impostor =
        Origin::start_tls("evil\n", None, TestCa::server_config(&other_leaf, None)?).await?;
    let dest = dir.path().join("vol-untrusted");
    let cfg = config(
        &impostor.https_url("/app.txt"),
        &dest,
        &["--ca-file", &ca_file, "--one-time"],
    )?;
    let err = sidecars::puller::run(cfg, CancellationToken::new())
        .await
        .expect_err("an untrusted server must fail");
    let text = chain(&err);
    ensure!(
        text.contains("invalid peer certificate") && text.contains("UnknownIssuer"),
        "{text}"
    );
    ensure!(text.contains(&impostor.https_url("/app.txt")), "{text}");
    ensure!(
        impostor.requests() == 0,
        "a request reached the untrusted server"
    );
    ensure!(!dest.join("current").exists());

    // The flags are checked when read: a missing CA file names the file.
    let missing = dir.path().join("missing.pem");
    let err = config(
        &origin.https_url("/app.txt"),
        &dest,
        &["--ca-file", &missing.display().to_string()],
    )
    .expect_err("a missing --ca-file");
    let text = format!("{err:#}");
    ensure!(
        text.contains("missing.pem") && text.contains("--ca-file"),
        "{text}"
    );
    Ok(())
}

/// A server that requires a client certificate (rustls' WebPkiClientVerifier): a sync works with
/// `--client-cert` and `--client-key`, and fails without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_client_certificate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new(dir.path(), "ca")?;
    let server = ca.issue(dir.path(), "server")?;
    let client = ca.issue(dir.path(), "client")?;
    let origin =
        Origin::start_tls("secret\n", None, TestCa::server_config(&server, Some(&ca))?).await?;
    let url = origin.https_url("/s.txt");
    let ca_file = ca.ca.display().to_string();

    let dest = dir.path().join("vol");
    let cfg = config(
        &url,
        &dest,
        &[
            "--ca-file",
            &ca_file,
            "--client-cert",
            &client.cert.display().to_string(),
            "--client-key",
            &client.key.display().to_string(),
            "--one-time",
        ],
    )?;
    sidecars::puller::run(cfg, CancellationToken::new()).await?;
    ensure!(read(dest.join("current/s.txt")).as_deref() == Some("secret\n"));

    let dest = dir.path().join("vol-anonymous");
    let cfg = config(&url, &dest, &["--ca-file", &ca_file, "--one-time"])?;
    let err = sidecars::puller::run(cfg, CancellationToken::new())
        .await
        .expect_err("no client certificate must fail");
    // With TLS 1.3 the client's handshake is done before the server refuses its (missing)
    // certificate: the refusal reaches the client as the alert, or, when the request was
    // already on its way, as the connection closing under it.
    let text = chain(&err);
    ensure!(
        text.contains("CertificateRequired") || text.contains("connection"),
        "{text}"
    );
    // The server counts the refusal once its side of the handshake ends, which may be after
    // the client saw the connection close.
    wait_until("the server's refused handshake", DEADLINE, || {
        origin.state.handshake_failures.load(Ordering::SeqCst) >= 1
    })
    .await?;
    ensure!(!dest.join("current").exists());

    // A key without its certificate is a flag error.
    let err = Args::try_parse_from([
        "podkit-puller",
        "--url",
        &url,
        "--dest",
        "/tmp/x",
        "--client-key",
        &client.key.display().to_string(),
    ])
    .expect_err("--client-key alone");
    ensure!(err.to_string().contains("--client-cert"), "{err}");
    Ok(())
}
