//! `--git` sources against bare repositories the test makes with the `git` program (Debian
//! package git): first sync, a moved branch, a tag, a commit, an unknown ref, and shallowness.

use super::*;

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
    Ok(())
}
