//! Publishing a pod's hostPorts and unpublishing them: podkit's nf_tables netlink against
//! `nft -f -`, in one run, plus [`netns::Nat::ensure`] when the table is in place already
//! (what every pod start pays).
//!
//! As DESIGN.md's network rule asks, the table goes in a fresh namespace that plays the
//! host, never in the machine's own. Per round: [`netns::Nat::publish`] of two mappings
//! (8080/tcp and 8080/udp) and [`netns::Nat::unpublish`]; then the same elements and owner
//! chain through two `nft -f -` runs, as a caller of the `nft` program would do it. Prints
//! the median and p90 of each. Run as root (needs Debian's `nftables`):
//! `cargo bench -p netns --bench nat -- [ROUNDS]`.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netns::{Bridge, HostPort, Namespace, Namespaces, Nat, PodNamespaces, Protocol};

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "run as root: it creates namespaces and nftables tables"
    );
    let rounds: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map_or(Ok(100), |a| a.parse())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let name = format!("pkb-nat-{}", std::process::id());
    let dir = std::env::temp_dir().join("podkit-bench").join(&name);
    let host = runtime.block_on(PodNamespaces::builder(&name, &dir).create())?;
    let result = runtime.block_on(async {
        let bridge = Bridge::default();
        bridge.ensure(&host.netlink().await?).await?;
        measure(host.net(), &bridge, rounds)
    });
    host.delete()?;
    result
}

fn measure(host: &Namespace, bridge: &Bridge, rounds: usize) -> anyhow::Result<()> {
    let nat = Nat::open(host)?;
    nat.ensure(bridge.subnet(), bridge.name())?;
    let ports = [
        HostPort::new(Protocol::Tcp, 8080, 80),
        HostPort::new(Protocol::Udp, 8080, 80),
    ];
    let pod_ip = Ipv4Addr::new(10, 90, 0, 2);
    let (mut ensure, mut podkit, mut nft) = (vec![], vec![], vec![]);
    for i in 0..rounds + 5 {
        let owner = format!("/run/podkit/pods/bench-{i}");
        let start = Instant::now();
        nat.ensure(bridge.subnet(), bridge.name())?;
        let ensured = start.elapsed();

        let start = Instant::now();
        nat.publish(&owner, pod_ip, &ports)?;
        anyhow::ensure!(nat.unpublish(&owner)?, "nothing unpublished");
        let ours = start.elapsed();

        let start = Instant::now();
        run_nft(
            host,
            &format!(
                "add chain ip podkit owner-{i} {{ comment \"{owner}\"; }}\n\
                 create element ip podkit hostports {{ tcp . 8080 comment \"{owner}\" : \
                 10.90.0.2 . 80, udp . 8080 comment \"{owner}\" : 10.90.0.2 . 80 }}\n"
            ),
        )?;
        run_nft(
            host,
            &format!(
                "delete element ip podkit hostports {{ tcp . 8080, udp . 8080 }}\n\
                 delete chain ip podkit owner-{i}\n"
            ),
        )?;
        let theirs = start.elapsed();
        if i >= 5 {
            // The first rounds warm caches (the nft binary, its libraries) for both sides.
            ensure.push(ensured);
            podkit.push(ours);
            nft.push(theirs);
        }
    }
    nat.remove()?;

    println!("two hostPorts published and unpublished, {rounds} rounds (median / p90)");
    let (pk, nf) = (stats(&mut podkit), stats(&mut nft));
    println!(
        "{:<22} {:>9.3} / {:>6.3} ms",
        "netlink (netns::Nat)",
        ms(pk.0),
        ms(pk.1)
    );
    println!(
        "{:<22} {:>9.3} / {:>6.3} ms  ({:.0}x)",
        "nft -f - (2 runs)",
        ms(nf.0),
        ms(nf.1),
        ms(nf.0) / ms(pk.0)
    );
    let en = stats(&mut ensure);
    println!(
        "{:<22} {:>9.3} / {:>6.3} ms",
        "ensure, table in place",
        ms(en.0),
        ms(en.1)
    );
    Ok(())
}

fn run_nft(ns: &Namespace, script: &str) -> anyhow::Result<()> {
    let mut cmd = Command::new("nft");
    cmd.args(["-f", "-"]).stdin(Stdio::piped());
    Namespaces::new([ns.clone()]).command(&mut cmd);
    let mut child = cmd.spawn()?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())?;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "nft -f - failed: {status}\n{script}");
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
