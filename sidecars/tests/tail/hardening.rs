//! Attacks on the tailer by a pod member that can write the log directory (issue #16, items 5
//! and 14; issue #21): symlinks to files outside it, FIFOs and devices swapped in, a read that
//! never returns, thousands of files under a low open-file limit, a file rewritten to the same
//! size while the tailer is off the CPU. Each runs the real binary against real files.

use std::os::unix::fs::symlink;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};

use crate::support::{Tailer, http_get, wait_until};

const DEADLINE: Duration = Duration::from_secs(60);

fn has_line(tailer: &Tailer, line: &str) -> bool {
    tailer.snapshot().iter().any(|l| l == line)
}

/// A port on 127.0.0.1 free right now, for `--health-addr`.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_podkit-tail"))
}

/// A member makes `x.log -> ../shadow` and a directory link `sub -> ../etc` in the log
/// directory: nothing outside the directory is shipped, with or without `--follow-symlinks`;
/// with it, a link to a file inside the directory is followed.
#[test]
fn symlinks_out_of_the_log_directory_are_not_followed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let logs = dir.path().join("logs");
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&logs)?;
    std::fs::create_dir_all(&etc)?;
    std::fs::write(
        dir.path().join("shadow"),
        "SECRET root:$6$hash:19000::::::\n",
    )?;
    std::fs::write(etc.join("passwd.log"), "SECRET from a linked directory\n")?;
    std::fs::write(logs.join("app.log"), "app line 1\n")?;
    symlink("../shadow", logs.join("x.log"))?;
    symlink(&etc, logs.join("sub"))?;
    let glob = format!("{}/**/*.log", logs.display());
    let args = ["--path", &glob, "--poll-interval", "50ms"];

    let stderr = dir.path().join("tail1.stderr");
    let tailer = Tailer::spawn(&args, &stderr)?;
    wait_until("app.log shipped", DEADLINE, || {
        has_line(&tailer, "app line 1")
    })?;
    wait_until("x.log skipped or shipped", DEADLINE, || {
        tailer.stderr().contains("symbolic link")
            || tailer.snapshot().iter().any(|l| l.contains("SECRET"))
    })?;
    let lines = tailer.kill()?;
    ensure!(
        !lines.iter().any(|l| l.contains("SECRET")),
        "a file outside the log directory was shipped: {lines:?}"
    );

    // --follow-symlinks: a link to a file inside the directory is read; outside, still not.
    std::fs::write(logs.join("data.txt"), "inside line\n")?;
    symlink("data.txt", logs.join("in.log"))?;
    let stderr = dir.path().join("tail2.stderr");
    let mut command = binary();
    command
        .args(args)
        .env("PODKIT_TAIL_FOLLOW_SYMLINKS", "true");
    let tailer = Tailer::spawn_command(command, &stderr)?;
    wait_until("the link inside followed", DEADLINE, || {
        has_line(&tailer, "inside line")
    })?;
    wait_until("x.log refused as outside", DEADLINE, || {
        tailer
            .stderr()
            .contains("outside every --path base directory")
    })?;
    // One more full scan after the refusal, with a line to know it happened.
    std::fs::write(logs.join("late.log"), "late line\n")?;
    wait_until("late.log shipped", DEADLINE, || {
        has_line(&tailer, "late line")
    })?;
    let lines = tailer.kill()?;
    ensure!(
        !lines.iter().any(|l| l.contains("SECRET")),
        "--follow-symlinks shipped a file outside the log directory: {lines:?}"
    );
    Ok(())
}

/// A member swaps regular files, FIFOs and `/dev/zero` device nodes at a matched path as fast
/// as it can (and leaves a FIFO at another): the tailer never blocks on a FIFO's open, never
/// reads a device, and keeps shipping the real log.
#[test]
fn fifos_and_devices_swapped_in_do_not_block_the_tailer() -> anyhow::Result<()> {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let dir = tempfile::tempdir()?;
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let app = logs.join("app.log");
    std::fs::write(&app, "before the attack\n")?;
    nix::unistd::mkfifo(&logs.join("pipe.log"), Mode::from_bits_truncate(0o600))?;
    let port = free_port()?;
    let health = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let glob = format!("{}/*.log", logs.display());
    let tailer = Tailer::spawn(
        &[
            "--path",
            &glob,
            "--poll-interval",
            "20ms",
            "--health-addr",
            &health.to_string(),
        ],
        &dir.path().join("tail.stderr"),
    )?;
    wait_until("app.log shipped", DEADLINE, || {
        has_line(&tailer, "before the attack")
    })?;

    let target = logs.join("x.log");
    let (reg, fifo, dev) = (
        logs.join("tmp.reg"),
        logs.join("tmp.fifo"),
        logs.join("tmp.dev"),
    );
    for i in 0..3000 {
        std::fs::write(&reg, format!("swapped {i}\n"))?;
        std::fs::rename(&reg, &target)?;
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600))?;
        std::fs::rename(&fifo, &target)?;
        mknod(
            &dev,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            makedev(1, 5),
        )?;
        std::fs::rename(&dev, &target)?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .open(&app)?
        .write_all_line("after the attack")?;
    let shipped = wait_until("app.log read after the attack", DEADLINE, || {
        has_line(&tailer, "after the attack")
    });
    let stderr = tailer.stderr();
    shipped.with_context(|| format!("stderr:\n{}", tail_of(&stderr)))?;
    let (status, body) = http_get(health, "/healthz")?;
    ensure!(status == 200, "/healthz {status} {body}");
    let lines = tailer.kill()?;
    ensure!(
        !lines.iter().any(|l| l.contains('\0')),
        "a device was read: {} lines of NUL bytes",
        lines.iter().filter(|l| l.contains('\0')).count()
    );
    ensure!(
        stderr.contains("not a regular file"),
        "no warning about the FIFO"
    );
    Ok(())
}

/// A read that does not return (here held by a fanotify permission hook that never answers, as
/// a hung network file system would): `/healthz` turns 503 after `--stall-timeout`, and back
/// to 200 once the read goes through; the line is shipped.
#[test]
fn healthz_fails_while_a_read_is_stuck() -> anyhow::Result<()> {
    use nix::fcntl::AT_FDCWD;
    use nix::sys::fanotify::{
        EventFFlags, Fanotify, FanotifyResponse, InitFlags, MarkFlags, MaskFlags, Response,
    };
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("app.log");
    std::fs::write(&log, "held line\n")?;
    let fan = Fanotify::init(
        InitFlags::FAN_CLASS_CONTENT | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK,
        EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE,
    )
    .context("fanotify_init (needs root and CONFIG_FANOTIFY_ACCESS_PERMISSIONS)")?;
    fan.mark(
        MarkFlags::FAN_MARK_ADD,
        MaskFlags::FAN_ACCESS_PERM,
        AT_FDCWD,
        Some(&log),
    )?;
    let port = free_port()?;
    let health = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut command = binary();
    command
        .args([
            "--path",
            &log.display().to_string(),
            "--health-addr",
            &health.to_string(),
        ])
        .env("PODKIT_TAIL_STALL_TIMEOUT", "1s");
    let tailer = Tailer::spawn_command(command, &dir.path().join("tail.stderr"))?;
    // The 503's body is kept: once the answering thread below runs, the read goes through.
    let mut stuck_body = String::new();
    let stuck = wait_until(
        "/healthz reporting the stuck read",
        DEADLINE,
        || match http_get(health, "/healthz") {
            Ok((503, body)) => {
                stuck_body = body;
                true
            }
            _ => false,
        },
    );
    // Answer every access from now on (also on failure, so the tailer can be killed cleanly).
    let stop = Arc::new(AtomicBool::new(false));
    let answering = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match fan.read_events() {
                    Ok(events) => {
                        for event in &events {
                            if let Some(fd) = event.fd() {
                                let _ = fan
                                    .write_response(FanotifyResponse::new(fd, Response::FAN_ALLOW));
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    };
    let result = (|| {
        stuck?;
        ensure!(stuck_body.contains("stuck"), "503 body {stuck_body:?}");
        wait_until("the held line shipped", DEADLINE, || {
            has_line(&tailer, "held line")
        })?;
        wait_until("/healthz ok again", DEADLINE, || {
            http_get(health, "/healthz").is_ok_and(|(status, _)| status == 200)
        })
    })();
    let _ = tailer.kill();
    stop.store(true, Ordering::Relaxed);
    let _ = answering.join();
    result
}

/// 300 rotated files that the glob still matches, under an open-file limit of 64 (hard and
/// soft): every one is read, and so is the next `app.log` after a rotation; files read to their
/// end are closed, and the failure warnings do not flood the log.
#[test]
fn many_rotated_files_under_a_low_fd_limit() -> anyhow::Result<()> {
    const FILES: usize = 300;
    let dir = tempfile::tempdir()?;
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let app = logs.join("app.log");
    for i in 0..FILES {
        std::fs::write(logs.join(format!("app.log.{i}")), format!("file {i:05}\n"))?;
    }
    std::fs::write(&app, "current file\n")?;
    let glob = format!("{}/app.log*", logs.display());
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_podkit-tail"))
        .args(["--path", &glob, "--poll-interval", "50ms"]);
    let tailer = Tailer::spawn_command(command, &dir.path().join("tail.stderr"))?;
    wait_until("current file shipped", DEADLINE, || {
        has_line(&tailer, "current file")
    })?;
    std::fs::rename(&app, logs.join(format!("app.log.{FILES}")))?;
    std::fs::write(&app, "the next app.log\n")?;
    let shipped = wait_until("every file and the next app.log shipped", DEADLINE, || {
        let lines = tailer.snapshot();
        lines.iter().any(|l| l == "the next app.log")
            && lines.iter().filter(|l| l.starts_with("file ")).count() >= FILES
    });
    let stderr = tailer.stderr();
    let lines = tailer.kill()?;
    let missing: Vec<_> = (0..FILES)
        .filter(|i| !lines.contains(&format!("file {i:05}")))
        .collect();
    shipped.with_context(|| {
        format!(
            "{} files not shipped, first {:?}; stderr:\n{}",
            missing.len(),
            &missing[..missing.len().min(10)],
            tail_of(&stderr)
        )
    })?;
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("open"))
        .count();
    ensure!(warnings <= 10, "{warnings} open-failure warnings");
    // A directory listing that failed for want of a descriptor is not a deletion.
    ensure!(
        !stderr.contains("renamed away or deleted"),
        "files taken for deleted:\n{}",
        tail_of(&stderr)
    );
    Ok(())
}

/// The file is truncated and rewritten to exactly the same size (copytruncate, then the app
/// writes as much again) while the tailer is off the CPU (SIGSTOP): the new content is shipped.
#[test]
fn a_file_rewritten_to_the_same_size_is_read_again() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("app.log");
    let version = |name: &str| -> String {
        (0..10)
            .map(|i| format!("{name} {i:04} same length\n"))
            .collect()
    };
    std::fs::write(&log, version("alpha"))?;
    let tailer = Tailer::spawn(
        &["--path", &log.display().to_string()],
        &dir.path().join("tail.stderr"),
    )?;
    wait_until("first version shipped", DEADLINE, || {
        has_line(&tailer, "alpha 0009 same length")
    })?;
    tailer.signal("STOP")?;
    let rewrite = (|| -> anyhow::Result<()> {
        let file = std::fs::OpenOptions::new().write(true).open(&log)?;
        file.set_len(0)?;
        std::io::Write::write_all(&mut &file, version("bravo").as_bytes())?;
        ensure!(file.metadata()?.len() == version("alpha").len() as u64);
        Ok(())
    })();
    tailer.signal("CONT")?;
    rewrite?;
    wait_until("the rewritten version shipped", DEADLINE, || {
        has_line(&tailer, "bravo 0009 same length")
    })
    .with_context(|| format!("stderr:\n{}", tail_of(&tailer.stderr())))?;
    Ok(())
}

trait WriteLine {
    fn write_all_line(&mut self, line: &str) -> std::io::Result<()>;
}

impl WriteLine for std::fs::File {
    fn write_all_line(&mut self, line: &str) -> std::io::Result<()> {
        std::io::Write::write_all(self, format!("{line}\n").as_bytes())
    }
}

fn tail_of(s: &str) -> &str {
    let start = s.len().saturating_sub(4000);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    &s[start..]
}
