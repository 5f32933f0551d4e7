//! `--git` sources against bare repositories the test makes with the `git` program (Debian
//! package git): first sync, a moved branch, a tag, a commit, an unknown ref, and shallowness.

use super::*;
use bytes::Bytes;

/// Runs `git` in `dir` with a fixed identity and no user configuration; its stdout, trimmed.
fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "init.defaultBranch=main", "-c", "user.name=podkit"])
        .args([
            "-c",
            "user.email=podkit@localhost",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .context("failed to run git (Debian package git)")?;
    ensure!(
        out.status.success(),
        "git {args:?} in {dir:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// A bare repository `origin.git` and a clone `work` to commit and push from.
struct Repo {
    origin: PathBuf,
    work: PathBuf,
}

impl Repo {
    fn new(dir: &Path) -> anyhow::Result<Self> {
        let origin = dir.join("origin.git");
        let work = dir.join("work");
        git(dir, &["init", "-q", "--bare", "origin.git"])?;
        git(dir, &["init", "-q", "work"])?;
        git(
            &work,
            &["remote", "add", "origin", &origin.display().to_string()],
        )?;
        Ok(Self { origin, work })
    }

    /// Commits `files` (`(path, content)`) on the current branch and pushes it; the commit.
    fn commit(&self, files: &[(&str, &str)], message: &str) -> anyhow::Result<String> {
        for (path, content) in files {
            let path = self.work.join(path);
            std::fs::create_dir_all(path.parent().context("no parent")?)?;
            std::fs::write(path, content)?;
        }
        git(&self.work, &["add", "-A"])?;
        git(&self.work, &["commit", "-q", "-m", message])?;
        git(
            &self.work,
            &["push", "-q", "origin", "HEAD:refs/heads/main"],
        )?;
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn url(&self) -> String {
        format!("file://{}", self.origin.display())
    }
}

fn git_config(repo: &str, dest: &Path, extra: &[&str]) -> anyhow::Result<Config> {
    let mut argv = vec![
        "podkit-puller",
        "--git",
        repo,
        "--period",
        "20ms",
        "--retry-initial",
        "20ms",
        "--retry-max",
        "100ms",
    ];
    argv.extend_from_slice(extra);
    let dest = dest.display().to_string();
    argv.extend_from_slice(&["--dest", &dest]);
    Ok(Config::try_from(Args::try_parse_from(argv)?)?)
}

/// The commit the published version was made from: the id's suffix.
fn published_commit(dest: &Path) -> Option<String> {
    let link = std::fs::read_link(dest.join("current")).ok()?;
    let id = link.file_name()?.to_str()?;
    Some(id.split_once('-')?.1.to_owned())
}

/// First sync of the default branch (shallow: one commit fetched of two), the tree without
/// `.git` and with its executable bit and symlink, an unchanged branch publishing nothing, and
/// a moved branch publishing a new version named by its commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_branch_first_sync_unchanged_and_moved() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = Repo::new(dir.path())?;
    repo.commit(&[("old.txt", "old\n")], "first")?;
    std::fs::create_dir_all(repo.work.join("bin"))?;
    std::fs::write(repo.work.join("bin/run.sh"), "#!/bin/sh\n")?;
    std::fs::set_permissions(
        repo.work.join("bin/run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    std::os::unix::fs::symlink("index.html", repo.work.join("home.html"))?;
    let c2 = repo.commit(&[("index.html", "v1\n")], "second: an exec bit and a link")?;

    let dest = dir.path().join("vol");
    let puller = Running::start(git_config(&repo.url(), &dest, &[])?);
    wait_until("the first git version", DEADLINE, || {
        published_commit(&dest).as_deref() == Some(c2.as_str())
    })
    .await?;
    let current = dest.join("current");
    ensure!(read(current.join("index.html")).as_deref() == Some("v1\n"));
    ensure!(read(current.join("old.txt")).as_deref() == Some("old\n"));
    ensure!(std::fs::read_link(current.join("home.html"))? == Path::new("index.html"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(current.join("bin/run.sh"))?.permissions(),
    );
    ensure!(mode & 0o777 == 0o755, "mode {mode:o}");
    ensure!(!current.join(".git").exists(), ".git published");
    // Shallow: the cache holds the fetched commit only, not its parents.
    let fetched = git(
        &dest.join(".repo"),
        &["rev-list", "--count", "refs/podkit/sync"],
    )?;
    ensure!(fetched == "1", "{fetched} commits fetched with --depth 1");

    // Unchanged: syncs that publish nothing.
    let seen = puller.count(|m| &m.not_modified);
    wait_until("three unchanged syncs", DEADLINE, || {
        puller.count(|m| &m.not_modified) >= seen + 3
    })
    .await?;
    ensure!(puller.count(|m| &m.publishes) == 1);
    ensure!(versions(&dest)?.len() == 1);

    // The branch moves: a new version named by the new commit.
    let c3 = repo.commit(&[("index.html", "v2\n")], "third")?;
    wait_until("the moved branch", DEADLINE, || {
        published_commit(&dest).as_deref() == Some(c3.as_str())
    })
    .await?;
    ensure!(read(current.join("index.html")).as_deref() == Some("v2\n"));
    // The counter follows the symlink swap.
    wait_until("two publishes counted", DEADLINE, || {
        puller.count(|m| &m.publishes) == 2
    })
    .await?;
    puller.stop().await?;
    Ok(())
}

/// `--ref` names a tag (annotated, on an older commit), a commit by hash, or a path source;
/// an unknown ref fails naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_tag_commit_and_unknown_ref() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = Repo::new(dir.path())?;
    let c1 = repo.commit(&[("version", "1\n")], "one")?;
    git(&repo.work, &["tag", "-a", "-m", "release 1", "v1"])?;
    git(&repo.work, &["push", "-q", "origin", "v1"])?;
    let c2 = repo.commit(&[("version", "2\n")], "two")?;
    repo.commit(&[("version", "3\n")], "three")?;

    let dest = dir.path().join("tag");
    let cfg = git_config(&repo.url(), &dest, &["--ref", "v1", "--one-time"])?;
    sidecars::puller::run(cfg, CancellationToken::new()).await?;
    ensure!(read(dest.join("current/version")).as_deref() == Some("1\n"));
    ensure!(published_commit(&dest).as_deref() == Some(c1.as_str()));

    // A commit by hash, from a plain path.
    let dest = dir.path().join("commit");
    let origin = repo.origin.display().to_string();
    let cfg = git_config(&origin, &dest, &["--ref", &c2, "--one-time"])?;
    sidecars::puller::run(cfg, CancellationToken::new()).await?;
    ensure!(read(dest.join("current/version")).as_deref() == Some("2\n"));
    ensure!(published_commit(&dest).as_deref() == Some(c2.as_str()));

    let dest = dir.path().join("unknown");
    let cfg = git_config(
        &repo.url(),
        &dest,
        &["--ref", "no-such-branch", "--one-time"],
    )?;
    let err = sidecars::puller::run(cfg, CancellationToken::new())
        .await
        .expect_err("an unknown ref must fail");
    let text = chain(&err);
    ensure!(text.contains("has no ref \"no-such-branch\""), "{text}");
    ensure!(text.contains(&repo.url()), "{text}");
    ensure!(!dest.join("current").exists());

    // Flags that only mean something for downloads are refused with --git, naming them.
    for flag in [["--sha256", "00"], ["--extract", "never"]] {
        let err = git_config(&repo.url(), &dest, &flag).expect_err("refused with --git");
        ensure!(format!("{err:#}").contains(flag[0]), "{flag:?}: {err:#}");
    }
    Ok(())
}

/// A git smart-HTTP server over TLS on 127.0.0.1: each request runs `git http-backend` (CGI)
/// on the repositories under `root`; without `Authorization: Bearer <token>` it answers 401.
async fn git_https_server(
    root: PathBuf,
    tls: rustls::ServerConfig,
    token: &'static str,
) -> anyhow::Result<(u16, CancellationToken)> {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
                _ = stopped.cancelled() => return,
            };
            let (acceptor, root) = (acceptor.clone(), root.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let root = root.clone();
                    async move { Ok::<_, std::convert::Infallible>(cgi(&root, token, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    use hyper::{Request, Response};
    async fn cgi(root: &Path, token: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let status = |code: u16| {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = hyper::StatusCode::from_u16(code).expect("status");
            response
        };
        let authorized = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {token}"));
        if !authorized {
            let mut response = status(401);
            response.headers_mut().insert(
                "www-authenticate",
                hyper::header::HeaderValue::from_static("Bearer realm=\"git\""),
            );
            return response;
        }
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let mut command = tokio::process::Command::new("git");
        command
            .arg("http-backend")
            .env_clear()
            .env("GIT_PROJECT_ROOT", root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("REQUEST_METHOD", req.method().as_str())
            .env("PATH_INFO", req.uri().path())
            .env("QUERY_STRING", req.uri().query().unwrap_or_default())
            .env("CONTENT_TYPE", header("content-type"))
            .env("GIT_PROTOCOL", header("git-protocol"))
            .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
            .env("REMOTE_USER", "podkit")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let Ok(body) = req.into_body().collect().await else {
            return status(400);
        };
        let body = body.to_bytes();
        command.env("CONTENT_LENGTH", body.len().to_string());
        let Ok(mut child) = command.spawn() else {
            return status(500);
        };
        let mut stdin = child.stdin.take().expect("piped stdin");
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(&body).await;
        });
        let Ok(output) = child.wait_with_output().await else {
            return status(500);
        };
        let _ = writer.await;
        // CGI: headers, a blank line, the body.
        let out = output.stdout;
        let Some(split) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
            return status(502);
        };
        let mut response = Response::new(Full::new(Bytes::copy_from_slice(&out[split + 4..])));
        for line in String::from_utf8_lossy(&out[..split]).lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("status") {
                let code = value.split(' ').next().and_then(|c| c.parse().ok());
                *response.status_mut() = hyper::StatusCode::from_u16(code.unwrap_or(500))
                    .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
            } else if let (Ok(name), Ok(value)) = (
                hyper::header::HeaderName::try_from(name),
                hyper::header::HeaderValue::try_from(value),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }

    Ok((port, stop))
}

/// `--git https://...` against `git http-backend` behind TLS with a test CA: the CA comes from
/// `--ca-file` (the puller's rustls configuration handed to gix's reqwest transport), the
/// token from `--bearer-token-file`; without the token the server's 401 fails the sync saying
/// how to give credentials, and without the CA the certificate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_over_https_with_ca_file_and_token() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = Repo::new(dir.path())?;
    let commit = repo.commit(&[("page.html", "over https\n")], "one")?;
    let ca = support::TestCa::new(dir.path(), "git")?;
    let leaf = ca.issue(dir.path(), "server")?;
    let (port, stop) = git_https_server(
        dir.path().to_owned(),
        support::TestCa::server_config(&leaf, None)?,
        "s3cret",
    )
    .await?;
    let _stop = stop.drop_guard();
    let url = format!("https://localhost:{port}/origin.git");
    let ca_file = ca.ca.display().to_string();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n")?;
    let token = token.display().to_string();

    let dest = dir.path().join("vol");
    let cfg = git_config(
        &url,
        &dest,
        &[
            "--ca-file",
            &ca_file,
            "--bearer-token-file",
            &token,
            "--one-time",
        ],
    )?;
    sidecars::puller::run(cfg, CancellationToken::new()).await?;
    ensure!(read(dest.join("current/page.html")).as_deref() == Some("over https\n"));
    ensure!(published_commit(&dest).as_deref() == Some(commit.as_str()));

    let dest = dir.path().join("no-token");
    let cfg = git_config(&url, &dest, &["--ca-file", &ca_file, "--one-time"])?;
    let err = sidecars::puller::run(cfg, CancellationToken::new())
        .await
        .expect_err("no token must fail");
    let text = chain(&err);
    ensure!(text.contains("asks for credentials"), "{text}");

    let other = support::TestCa::new(dir.path(), "other")?;
    let dest = dir.path().join("untrusted");
    let other_ca = other.ca.display().to_string();
    let cfg = git_config(
        &url,
        &dest,
        &[
            "--ca-file",
            &other_ca,
            "--bearer-token-file",
            &token,
            "--one-time",
        ],
    )?;
    let err = sidecars::puller::run(cfg, CancellationToken::new())
        .await
        .expect_err("an untrusted server must fail");
    let text = chain(&err);
    ensure!(text.contains("UnknownIssuer"), "{text}");
    ensure!(!dest.join("current").exists());
    Ok(())
}
