//! Conditional requests that never miss an update (issue #21): a `Last-Modified` within a
//! second of the answer's `Date` is weak (RFC 9110 §8.8.2.2) and never sent back; a `file://`
//! source's nanosecond mtime, size and inode are trusted only once the mtime is a second old;
//! an `ETag` is preferred when the origin sends one.

use std::time::{SystemTime, UNIX_EPOCH};

use super::*;
use support::PythonServer;

/// Writes `content` to `path` by a rename, as a deploy would.
fn replace(path: &Path, content: &str) -> anyhow::Result<SystemTime> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)?;
    Ok(std::fs::metadata(path)?.modified()?)
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Sleeps until 50 ms into the next whole second of the wall clock (file times come from the
/// kernel's coarse clock, a few ms behind). The attack needs two writes within one second, which
/// the origin's one-second `Last-Modified` cannot tell apart.
async fn next_second() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let into = Duration::from_nanos(u64::from(now.subsec_nanos()));
    tokio::time::sleep(Duration::from_secs(1) - into + Duration::from_millis(50)).await;
}

/// `python3 -m http.server` as the origin: v2 written at the start of a second and published,
/// v3 written half a second later. v3's `Last-Modified` is v2's second; had v2's been sent back
/// as `If-Modified-Since`, every later poll would get a `304` and v3 would never be published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_update_within_the_same_second_is_published() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let site = dir.path().join("site");
    std::fs::create_dir(&site)?;
    let file = site.join("app.txt");
    replace(&file, "v1\n")?;
    let server = PythonServer::start(&site)?;
    let dest = dir.path().join("vol");
    let puller = Running::start(config(&server.url("/app.txt"), &dest, &[])?);
    let current = dest.join("current/app.txt");
    wait_until("v1", DEADLINE, || read(&current).as_deref() == Some("v1\n")).await?;

    // On a loaded machine v2 may be published too late for v3 to fall in its second; then the
    // attack did not happen, and is tried again.
    for attempt in 0..5 {
        next_second().await;
        let v2 = format!("v2 {attempt}\n");
        let written = replace(&file, &v2)?;
        wait_until("v2", DEADLINE, || {
            read(&current).as_deref() == Some(&v2[..])
        })
        .await?;
        let half = written + Duration::from_millis(500);
        if let Ok(wait) = half.duration_since(SystemTime::now()) {
            tokio::time::sleep(wait).await;
        }
        let v3 = format!("v3 {attempt}\n");
        let rewritten = replace(&file, &v3)?;
        if unix_secs(rewritten) != unix_secs(written) {
            continue;
        }
        wait_until("v3, written in v2's second", DEADLINE, || {
            read(&current).as_deref() == Some(&v3[..])
        })
        .await?;
        ensure!(puller.count(|m| &m.failures) == 0);
        return puller.stop().await;
    }
    anyhow::bail!("never managed to write v2 and v3 within one second")
}

/// A `file://` source rewritten in place twice within one mtime tick (the same size, the same
/// inode, the same mtime: a filesystem with coarse timestamps, or two writes in one kernel
/// tick) still publishes the last content; an mtime a second old is trusted, and the file is
/// then not read again while it is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_update_within_one_mtime_tick_is_published() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("config.txt");
    std::fs::write(&file, "v1-0\n")?;
    let dest = dir.path().join("vol");
    let puller = Running::start(config(&format!("file://{}", file.display()), &dest, &[])?);
    let current = dest.join("current/config.txt");
    wait_until("v1", DEADLINE, || {
        read(&current).as_deref() == Some("v1-0\n")
    })
    .await?;

    for attempt in 0..5 {
        // In place: the same inode and size.
        let v2 = format!("v2-{attempt}\n");
        std::fs::write(&file, &v2)?;
        let stamp = std::fs::metadata(&file)?.modified()?;
        wait_until("v2", DEADLINE, || {
            read(&current).as_deref() == Some(&v2[..])
        })
        .await?;
        let v3 = format!("v3-{attempt}\n");
        std::fs::write(&file, &v3)?;
        std::fs::File::options()
            .write(true)
            .open(&file)?
            .set_modified(stamp)?;
        // The same tick only if v3 came within the second the puller distrusts.
        if SystemTime::now().duration_since(stamp)? >= Duration::from_secs(1) {
            continue;
        }
        wait_until("v3, in v2's mtime tick", DEADLINE, || {
            read(&current).as_deref() == Some(&v3[..])
        })
        .await?;
        // A second later the mtime is trusted: polls no longer read the file.
        let skipped = puller.count(|m| &m.not_modified);
        wait_until("polls that skip the unchanged file", DEADLINE, || {
            puller.count(|m| &m.not_modified) >= skipped + 3
        })
        .await?;
        ensure!(puller.count(|m| &m.failures) == 0);
        return puller.stop().await;
    }
    anyhow::bail!("never managed to write v2 and v3 within one second")
}

/// An origin with a strong `ETag` (and a `Last-Modified` as new as its `Date`, which must not
/// matter): every poll is an `If-None-Match` answered `304`, only a changed `ETag` costs a
/// download, and `If-Modified-Since` is never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strong_etag_only_a_changed_etag_downloads() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("vol");
    let now = || {
        jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&jiff::Timestamp::now())
            .map_err(anyhow::Error::from)
    };
    let origin = Origin::start("v1\n", Some("\"e1\"")).await?;
    origin.set_last_modified(Some(now()?));
    let puller = Running::start(config(&origin.url("/app.txt"), &dest, &[])?);
    let current = dest.join("current/app.txt");
    wait_until("v1", DEADLINE, || read(&current).as_deref() == Some("v1\n")).await?;
    wait_until("ten 304s", DEADLINE, || origin.not_modified() >= 10).await?;
    ensure!(
        origin.state.ok.load(Ordering::SeqCst) == 1,
        "downloads without a change"
    );

    origin.set("v2\n", Some("\"e2\""));
    origin.set_last_modified(Some(now()?));
    wait_until("v2", DEADLINE, || read(&current).as_deref() == Some("v2\n")).await?;
    let seen = origin.not_modified();
    wait_until("ten more 304s", DEADLINE, || {
        origin.not_modified() >= seen + 10
    })
    .await?;
    ensure!(
        origin.state.ok.load(Ordering::SeqCst) == 2,
        "{} downloads for two ETags",
        origin.state.ok.load(Ordering::SeqCst)
    );
    ensure!(origin.state.if_modified_since.load(Ordering::SeqCst) == 0);
    ensure!(puller.count(|m| &m.publishes) == 2);
    puller.stop().await
}
