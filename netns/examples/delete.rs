//! Deletes a pod's namespaces without a handle: after the process that made them crashed, or to
//! finish a delete that was cut short. Idempotent: prints nothing for a pod already gone.
//!
//! ```text
//! sudo cargo run -p netns --example delete -- NAME DIR
//! ```
//! Equal to `ip netns del NAME`, plus the pod's other pins in DIR and its PID 1.

use anyhow::Context;
use netns::PodNamespaces;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(dir)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: delete NAME DIR");
    };
    let removed = PodNamespaces::remove(&name, dir.as_ref())
        .with_context(|| format!("failed to delete pod {name:?}"))?;
    for line in removed {
        println!("{line}");
    }
    Ok(())
}
