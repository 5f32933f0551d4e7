//! The driver of bench/pod.sh: a 3-member pod up and down, podkit against `podman kube play` /
//! `podman kube down` of the same manifest and against `unshare` + `ip` (the floor: namespaces
//! and three processes, nothing else), in one run: podkit and the floor interleaved, then
//! podman's rounds.
//!
//! podkit's "up" is from starting `podkit run` to status.json showing all three members
//! running (the driver waits on podkit's progress lines, then reads status.json); "down" is
//! from SIGTERM to `podkit run` having exited with everything removed. The floor's "up" ends
//! when its shell has forked the three members. podman's are the durations of `podman kube
//! play` (which returns once the containers run) and `podman kube down`; the cleanup podman
//! goes on doing after `kube down` returned is waited out, unmeasured, before the next round.
//! Each tool starts after a second of idle (`IDLE_MS` sets it). Run as root:
//! `cargo bench --bench pod -- [ROUNDS] [--no-podman]`.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// The idle spell before each tool's start, unless `IDLE_MS` says otherwise (`IDLE_MS=0`: back
/// to back).
const IDLE: Duration = Duration::from_secs(1);

/// Members that stop at once on SIGTERM (the `wait` builtin returns on a trapped signal).
const MEMBER: &str = "trap 'exit 0' TERM; sleep 100000 & wait";

fn manifest(name: &str) -> String {
    let member = |n: &str| {
        format!(
            "  - name: {n}\n    image: localhost/busybox\n    command: [/bin/sh, -c, \"{MEMBER}\"]\n"
        )
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations: {{podkit.io/host-process: \"true\"}}\nspec:\n  terminationGracePeriodSeconds: 10\n  containers:\n{}{}{}",
        member("a"),
        member("b"),
        member("c")
    )
}

fn main() -> anyhow::Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "run as root: pods need namespaces"
    );
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let rounds: usize = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .map_or(Ok(20), |a| a.parse())?;
    let podman = !args.iter().any(|a| a == "--no-podman") && which("podman");
    let podkit = std::env::var_os("PODKIT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/podkit"));
    ensure!(
        podkit.exists(),
        "{} missing: build it with cargo build --release",
        podkit.display()
    );
    let idle = match std::env::var("IDLE_MS") {
        Ok(ms) => Duration::from_millis(ms.parse().context("IDLE_MS: not a number of ms")?),
        Err(_) => IDLE,
    };
    let dir = std::env::temp_dir().join("podkit-bench-pod");
    std::fs::create_dir_all(&dir)?;

    let mut results: Vec<(&str, Vec<Duration>, Vec<Duration>)> =
        vec![("podkit", vec![], vec![]), ("unshare+ip", vec![], vec![])];
    if podman {
        results.push(("podman", vec![], vec![]));
    }
    let mut rss = Vec::new();
    // Major page faults (pages read from disk) per round, podkit's and the floor's: this host
    // pages out page cache that no process maps and nothing touched for 30 s (DAMON), so a
    // binary run now and then may have to be read back in part.
    let mut faults: [Vec<u64>; 2] = [vec![], vec![]];
    for round in 0..rounds + 2 {
        let name = format!("pkbench-{}-{round}", std::process::id());
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, manifest(&name))?;
        // Every tool starts from the same state: a machine idle for a second, as a user's
        // usually is. (Back to back, podkit's up is 3.5-4 ms shorter: no idle vCPU to wake.)
        std::thread::sleep(idle);
        let before = children_major_faults()?;
        let (up, down, kib) = podkit_round(&podkit, &name, &file)?;
        let between = children_major_faults()?;
        std::thread::sleep(idle);
        let floor = floor_round()?;
        let after = children_major_faults()?;
        std::fs::remove_file(&file)?;
        if round < 2 {
            continue; // warm-up: page cache, binaries
        }
        rss.push(kib);
        faults[0].push(between - before);
        faults[1].push(after - between);
        results[0].1.push(up);
        results[0].2.push(down);
        results[1].1.push(floor.0);
        results[1].2.push(floor.1);
    }
    // podman's rounds come after, not between: one takes 4 s, over which this host starts
    // paging the other tools' binaries out (see `faults`), so that podkit and the floor would
    // be measured reading their code back from disk.
    if podman {
        for round in 0..rounds + 1 {
            let name = format!("pkbench-{}-podman-{round}", std::process::id());
            let file = dir.join(format!("{name}.yaml"));
            std::fs::write(&file, manifest(&name))?;
            std::thread::sleep(idle);
            let (up, down) = podman_round(&file)?;
            std::fs::remove_file(&file)?;
            if round > 0 {
                results[2].1.push(up);
                results[2].2.push(down);
            }
        }
    }

    // The same without the rounds that read code from disk (before `stats` sorts `results`).
    let cached: Vec<String> = (0..2)
        .map(|tool| {
            let mut up: Vec<Duration> = results[tool]
                .1
                .iter()
                .zip(&faults[tool])
                .filter(|&(_, &f)| f == 0)
                .map(|(&up, _)| up)
                .collect();
            match up.len() {
                0 => "none".to_owned(),
                n => format!("{n} rounds, up {:.1} ms", ms(stats(&mut up).0)),
            }
        })
        .collect();
    println!("3-member pod, {rounds} rounds: median (p90)");
    println!("{:<12} {:>20} {:>20}", "", "up", "down");
    for (tool, up, down) in &mut results {
        let (u50, u90) = stats(up);
        let (d50, d90) = stats(down);
        println!(
            "{tool:<12} {:>9.1} ({:>6.1}) ms {:>9.1} ({:>6.1}) ms",
            ms(u50),
            ms(u90),
            ms(d50),
            ms(d90)
        );
    }
    if podman {
        let (pk_up, pk_down) = (stats(&mut results[0].1).0, stats(&mut results[0].2).0);
        let (pm_up, pm_down) = (stats(&mut results[2].1).0, stats(&mut results[2].2).0);
        println!(
            "podman / podkit: up {:.1}x, down {:.1}x",
            ms(pm_up) / ms(pk_up),
            ms(pm_down) / ms(pk_down)
        );
    }
    for ((tool, faults), cached) in ["podkit", "unshare+ip"].iter().zip(&faults).zip(&cached) {
        println!(
            "{tool}: major page faults in {} of {rounds} rounds, {} in all; without: {cached}",
            faults.iter().filter(|&&f| f > 0).count(),
            faults.iter().sum::<u64>()
        );
    }
    rss.sort_unstable();
    println!(
        "podkit supervisor RSS with 3 members: median {} KiB, max {} KiB",
        rss[rss.len() / 2],
        rss[rss.len() - 1]
    );
    Ok(())
}

/// One podkit pod: (up, down, supervisor RSS in KiB).
fn podkit_round(
    podkit: &Path,
    name: &str,
    file: &Path,
) -> anyhow::Result<(Duration, Duration, u64)> {
    let status = Path::new("/run/podkit/pods").join(name).join("status.json");
    let start = Instant::now();
    let mut run = Command::new(podkit)
        .args(["run", "-f"])
        .arg(file)
        .stderr(Stdio::piped())
        .spawn()
        .context("start podkit run")?;
    // Blocked on podkit's progress lines, as the floor is on its `echo up`: a poll loop here
    // took CPU from podkit on a 2-core machine (the scheduler ran the poller in the middle of
    // podkit's start, about a third of it, while the other CPU idled).
    let mut progress = BufReader::new(run.stderr.take().context("stderr")?);
    let mut started = 0;
    let mut line = String::new();
    while started < 3 {
        line.clear();
        if progress.read_line(&mut line)? == 0 {
            bail!("pod {name} did not come up: podkit run ended");
        }
        if line.contains("Started container") {
            started += 1;
        }
    }
    // The event is logged as the status is updated, a moment before status.json is written.
    loop {
        if let Ok(text) = std::fs::read_to_string(&status)
            && text.matches("\"running\"").count() == 3
        {
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "pod {name}: status.json does not show 3 running members"
        );
        std::thread::sleep(Duration::from_micros(20));
    }
    let up = start.elapsed();
    let kib = rss_kib(run.id())?;
    let start = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let exit = run.wait()?;
    let down = start.elapsed();
    // What podkit logged while going down fits in the pipe; read it out only now.
    std::io::copy(&mut progress, &mut std::io::sink())?;
    ensure!(exit.success(), "podkit run failed: {exit}");
    Ok((up, down, kib))
}

/// The floor: new net/IPC/UTS namespaces, lo up, three members; then SIGTERM to all.
fn floor_round() -> anyhow::Result<(Duration, Duration)> {
    let script =
        format!("ip link set lo up && for i in 1 2 3; do sh -c \"{MEMBER}\" & done; echo up; wait");
    let start = Instant::now();
    let mut child = Command::new("unshare")
        .args(["--net", "--ipc", "--uts", "--fork", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let up = start.elapsed();
    let start = Instant::now();
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM)?;
    child.wait()?;
    let down = start.elapsed();
    // A member's `sleep` forked after the SIGTERM went out would outlive the round.
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    Ok((up, down))
}

fn podman_round(file: &Path) -> anyhow::Result<(Duration, Duration)> {
    let timed = |args: &[&str]| -> anyhow::Result<Duration> {
        let start = Instant::now();
        let out = Command::new("podman").args(args).arg(file).output()?;
        ensure!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(start.elapsed())
    };
    let times = (timed(&["kube", "play"])?, timed(&["kube", "down"])?);
    // `kube down` returns while conmon's `podman container cleanup` processes still run (about
    // 1.5 s of CPU here): the next round's podkit and floor must not pay for them.
    let settled = Instant::now();
    while podman_processes() > 0 && settled.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(times)
}

/// How many podman or conmon processes are alive (zombies not counted).
fn podman_processes() -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let Some((comm, rest)) = stat.split_once(") ") else {
                return false;
            };
            let comm = comm.rsplit_once('(').map_or("", |(_, c)| c);
            matches!(comm, "podman" | "conmon") && !rest.starts_with('Z')
        })
        .count()
}

/// Major page faults of the waited-for children of this process and of theirs (`cmajflt`).
fn children_major_faults() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let fields = stat.rsplit_once(") ").context("/proc/self/stat")?.1;
    // state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
    let cmajflt = fields.split_whitespace().nth(10).context("no cmajflt")?;
    Ok(cmajflt.parse()?)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn stats(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
