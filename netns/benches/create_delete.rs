//! Creating and deleting a pod's namespaces: podkit against iproute2, in one run.
//!
//! podkit: net + IPC + UTS namespaces (hostname set), pinned under a directory and at
//! /run/netns/NAME, `lo` up through netlink; then delete. iproute2: `ip netns add X` +
//! `ip -n X link set lo up` (a network namespace only); then `ip netns del X`.
//! Prints the median and p90 of each step and the ratio. Run as root:
//! `cargo bench -p netns --bench create_delete -- [ROUNDS]` (or bench/netns.sh).

use std::process::Command;
use std::time::{Duration, Instant};

use netns::PodNamespaces;

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "run as root: it creates namespaces"
    );
    let rounds: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map_or(Ok(200), |a| a.parse())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join("podkit-bench");

    let (mut pk_up, mut pk_down, mut ip_up, mut ip_down) = (vec![], vec![], vec![], vec![]);
    // Interleaved, so that both see the same machine state over the run.
    for i in 0..rounds + 5 {
        let name = format!("pkb-{}-{i}", std::process::id());
        let start = Instant::now();
        let pod = runtime.block_on(PodNamespaces::builder(&name, dir.join(&name)).create())?;
        let up = start.elapsed();
        let start = Instant::now();
        pod.delete()?;
        let down = start.elapsed();

        let ip_name = format!("ipb-{}-{i}", std::process::id());
        let start = Instant::now();
        ip(&["netns", "add", &ip_name])?;
        ip(&["-n", &ip_name, "link", "set", "lo", "up"])?;
        let ip_up_time = start.elapsed();
        let start = Instant::now();
        ip(&["netns", "del", &ip_name])?;
        let ip_down_time = start.elapsed();

        if i >= 5 {
            // The first rounds warm caches (binaries, dentries) for both sides.
            pk_up.push(up);
            pk_down.push(down);
            ip_up.push(ip_up_time);
            ip_down.push(ip_down_time);
        }
    }

    println!("pod namespaces, {rounds} rounds (median / p90)");
    println!(
        "{:<10} {:>22} {:>22} {:>8}",
        "step", "podkit", "ip (iproute2)", "ip/podkit"
    );
    for (step, pk, ip) in [
        ("create", &mut pk_up, &mut ip_up),
        ("delete", &mut pk_down, &mut ip_down),
    ] {
        let (pk_med, pk_p90) = stats(pk);
        let (ip_med, ip_p90) = stats(ip);
        println!(
            "{step:<10} {:>9.3} / {:>6.3} ms {:>9.3} / {:>6.3} ms {:>7.1}x",
            ms(pk_med),
            ms(pk_p90),
            ms(ip_med),
            ms(ip_p90),
            ms(ip_med) / ms(pk_med)
        );
    }
    let total = |a: &[Duration], b: &[Duration]| {
        ms(stats(&mut a.to_vec()).0) + ms(stats(&mut b.to_vec()).0)
    };
    let (pk_total, ip_total) = (total(&pk_up, &pk_down), total(&ip_up, &ip_down));
    println!(
        "{:<10} {pk_total:>18.3} ms {ip_total:>18.3} ms {:>7.1}x",
        "both",
        ip_total / pk_total
    );
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("ip").args(args).status()?;
    anyhow::ensure!(status.success(), "ip {args:?} failed: {status}");
    Ok(())
}

fn stats(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
