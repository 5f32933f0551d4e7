//! Putting a pod on the bridge and taking it off: podkit's netlink against iproute2, in one
//! run, plus the lease of its address.
//!
//! As DESIGN.md's network rule asks, the bridge goes in a fresh namespace that plays the
//! host, never in the machine's own. Per round, a new pod namespace (not timed) is attached
//! and detached by [`netns::Bridge`]; then the same through `ip` (`ip link add ... master ...
//! type veth peer name eth0 netns ...`, `ip -n POD link set eth0 up`, `address add`,
//! `route add default`, then `ip link del`); and an address is allocated and released by
//! [`netns::Ipam`] in a directory under /run (or `$PKB_IPAM_DIR`). A pod stays attached 50 ms
//! (`$PKB_SETTLE_MS`), not timed. Prints the median and p90 of each step. Run as root:
//! `cargo bench -p netns --bench attach_detach -- [ROUNDS]`.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use netns::{Bridge, Ipam, PodNamespaces};

/// How long a pod stays attached before it is detached: 50 ms, or `$PKB_SETTLE_MS`.
/// Deleting a link right after it was made waits for the work its creation queued (measured
/// here: about 30 ms at once, 15 ms after 50 ms), and no pod lives that briefly;
/// `PKB_SETTLE_MS=0` measures that case.
fn settle() -> Duration {
    let ms = std::env::var("PKB_SETTLE_MS")
        .ok()
        .and_then(|v| v.parse().ok());
    Duration::from_millis(ms.unwrap_or(50))
}

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "run as root: it creates namespaces and links"
    );
    let rounds: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map_or(Ok(50), |a| a.parse())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let id = std::process::id();
    let dir = std::env::temp_dir().join("podkit-bench");
    let host_name = format!("pkb-host-{id}");
    let host =
        runtime.block_on(PodNamespaces::builder(&host_name, dir.join(&host_name)).create())?;
    let result = runtime.block_on(measure(&host, rounds, &dir));
    host.delete()?;
    result
}

async fn measure(host: &PodNamespaces, rounds: usize, dir: &std::path::Path) -> anyhow::Result<()> {
    let id = std::process::id();
    let net = host.netlink().await?;
    let bridge = Bridge::default();
    bridge.ensure(&net).await?;
    let leases = tempdir_on_run()?;
    let ipam = Ipam::open(leases.path(), bridge.subnet())?;

    let (mut attach, mut detach, mut ip_attach, mut ip_detach) = (vec![], vec![], vec![], vec![]);
    let (mut allocate, mut release) = (vec![], vec![]);
    for i in 0..rounds + 5 {
        let name = format!("pkb-pod-{id}-{i}");
        let pod = PodNamespaces::builder(&name, dir.join(&name))
            .create()
            .await?;
        // The pod goes whatever happened, taking what is left of its links with it.
        let timed = one_round(&bridge, &net, host, &pod, &ipam).await;
        pod.delete()?;
        let [up, down, ip_up, ip_down, leased_time, released] = timed?;

        if i >= 5 {
            // The first rounds warm caches (binaries, dentries, slabs) for both sides.
            attach.push(up);
            detach.push(down);
            ip_attach.push(ip_up);
            ip_detach.push(ip_down);
            allocate.push(leased_time);
            release.push(released);
        }
    }

    println!("a pod on the bridge, {rounds} rounds (median / p90)");
    println!(
        "{:<10} {:>22} {:>22} {:>8}",
        "step", "podkit", "ip (iproute2)", "ip/podkit"
    );
    for (step, pk, ip) in [
        ("attach", &mut attach, &mut ip_attach),
        ("detach", &mut detach, &mut ip_detach),
    ] {
        let ((pk_med, pk_p90), (ip_med, ip_p90)) = (stats(pk), stats(ip));
        println!(
            "{step:<10} {:>9.3} / {:>6.3} ms {:>9.3} / {:>6.3} ms {:>7.1}x",
            ms(pk_med),
            ms(pk_p90),
            ms(ip_med),
            ms(ip_p90),
            ms(ip_med) / ms(pk_med)
        );
    }
    for (step, samples) in [("allocate", &mut allocate), ("release", &mut release)] {
        let (med, p90) = stats(samples);
        println!("{step:<10} {:>9.3} / {:>6.3} ms", ms(med), ms(p90));
    }
    Ok(())
}

/// Attach, detach, the same through `ip`, allocate and release: each timed.
async fn one_round(
    bridge: &Bridge,
    net: &netns::Netlink,
    host: &PodNamespaces,
    pod: &PodNamespaces,
    ipam: &Ipam,
) -> anyhow::Result<[Duration; 6]> {
    let ip = Ipv4Addr::new(10, 90, 0, 2);
    let start = Instant::now();
    bridge.attach(net, pod.net(), "pkb0", ip).await?;
    let up = start.elapsed();
    std::thread::sleep(settle());
    let start = Instant::now();
    bridge.detach(net, "pkb0").await?;
    let down = start.elapsed();

    let (ip_up, ip_down) = with_ip(host.net().path(), pod.net().path(), ip)?;

    let start = Instant::now();
    let leased = ipam.allocate(pod.name())?;
    let leased_time = start.elapsed();
    let start = Instant::now();
    anyhow::ensure!(ipam.release(pod.name())? == vec![leased]);
    let released = start.elapsed();
    Ok([up, down, ip_up, ip_down, leased_time, released])
}

/// The same attach and detach through `ip`, timed.
fn with_ip(
    host: &std::path::Path,
    pod: &std::path::Path,
    ip: Ipv4Addr,
) -> anyhow::Result<(Duration, Duration)> {
    // `ip -n` takes a name under /run/netns; `ip --netns` nothing else either, so go by
    // `nsenter --net=PATH ip ...` for the host and `netns PATH` for the peer (ip takes a path
    // there when it contains a '/').
    let (host, pod) = (host.to_string_lossy(), pod.to_string_lossy());
    let in_host = |args: &[&str]| {
        run(
            "nsenter",
            &[&[&*format!("--net={host}"), "ip"], args].concat(),
        )
    };
    let in_pod = |args: &[&str]| {
        run(
            "nsenter",
            &[&[&*format!("--net={pod}"), "ip"], args].concat(),
        )
    };
    let start = Instant::now();
    in_host(&[
        "link", "add", "pkb1", "mtu", "65535", "master", "podkit0", "up", "type", "veth", "peer",
        "name", "eth0", "mtu", "65535", "netns", &pod,
    ])?;
    in_pod(&["link", "set", "eth0", "up"])?;
    in_pod(&["address", "add", &format!("{ip}/16"), "dev", "eth0"])?;
    in_pod(&["route", "add", "default", "via", "10.90.0.1"])?;
    let up = start.elapsed();
    std::thread::sleep(settle());
    let start = Instant::now();
    in_host(&["link", "del", "pkb1"])?;
    Ok((up, start.elapsed()))
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(program).args(args).status()?;
    anyhow::ensure!(status.success(), "{program} {args:?} failed: {status}");
    Ok(())
}

/// Leases belong on a tmpfs (see `ipam.rs`), such as /run on most systems; `PKB_IPAM_DIR`
/// picks where (default /run).
fn tempdir_on_run() -> anyhow::Result<tempfile::TempDir> {
    let parent = std::env::var_os("PKB_IPAM_DIR").unwrap_or_else(|| "/run".into());
    Ok(tempfile::Builder::new()
        .prefix("podkit-bench-ipam-")
        .tempdir_in(parent)?)
}

fn stats(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
