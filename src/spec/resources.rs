//! kubelet's arithmetic for a container's `resources` (cpu and memory): what its cgroup gets,
//! the pod's QoS class and the container's OOM score, with kubelet's constants and rounding
//! (`pkg/kubelet/cm/helpers_linux.go`: `MilliCPUToShares`, `MilliCPUToQuota`;
//! `pkg/apis/core/v1/helper/qos`: `ComputePodQOS`; `pkg/kubelet/qos/policy.go`:
//! `GetContainerOOMScoreAdjust`). The supervisor gives the numbers to the OCI runtime
//! (`linux.resources`, `process.oomScoreAdj`); the validator reads the quantities.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One container's cpu (millicores) and memory (bytes), after the API server's defaulting
/// (a limit without a request gives the request). All `None`: a BestEffort container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_request: Option<u64>,
    pub cpu_limit: Option<u64>,
    pub memory_request: Option<u64>,
    pub memory_limit: Option<u64>,
}

impl Resources {
    /// Requests default to limits, as the API server defaults them.
    pub fn defaulted(mut self) -> Resources {
        // (SetDefaults_Pod: `requests[k] = limits[k]` for every limit without a request.)
        if self.cpu_request.is_none() {
            self.cpu_request = self.cpu_limit;
        }
        if self.memory_request.is_none() {
            self.memory_request = self.memory_limit;
        }
        self
    }
}

const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;
const SHARES_PER_CPU: u64 = 1024;
const QUOTA_PERIOD: u64 = 100_000;
/// The smallest quota kubelet gives (its `MinQuotaPeriod`, used as the least quota): 1 ms.
const MIN_QUOTA: u64 = 1000;

/// `MilliCPUToShares`: the request (or, without one, the limit) as cpu.shares.
pub fn cpu_shares(millis: Option<u64>) -> u64 {
    match millis {
        None | Some(0) => MIN_SHARES,
        Some(m) => (m.saturating_mul(SHARES_PER_CPU) / 1000).clamp(MIN_SHARES, MAX_SHARES),
    }
}

/// `MilliCPUToQuota` with the default 100 ms period: (quota, period) for a cpu limit.
pub fn cpu_quota(limit_millis: Option<u64>) -> Option<(u64, u64)> {
    let m = limit_millis.filter(|m| *m > 0)?;
    Some((
        (m.saturating_mul(QUOTA_PERIOD) / 1000).max(MIN_QUOTA),
        QUOTA_PERIOD,
    ))
}

/// The pod's QoS class (`ComputePodQOS`) over its init and app containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Qos {
    Guaranteed,
    Burstable,
    #[default]
    BestEffort,
}

impl Qos {
    pub fn as_str(self) -> &'static str {
        match self {
            Qos::Guaranteed => "Guaranteed",
            Qos::Burstable => "Burstable",
            Qos::BestEffort => "BestEffort",
        }
    }

    pub fn of(containers: &[Resources]) -> Qos {
        let positive = |v: Option<u64>| v.filter(|v| *v > 0);
        let mut any = false;
        let mut guaranteed = true;
        let (mut req_cpu, mut req_mem, mut lim_cpu, mut lim_mem) = (0u64, 0u64, 0u64, 0u64);
        let (mut has_req_cpu, mut has_req_mem, mut has_lim_cpu, mut has_lim_mem) =
            (false, false, false, false);
        for c in containers {
            for (v, sum, has) in [
                (positive(c.cpu_request), &mut req_cpu, &mut has_req_cpu),
                (positive(c.memory_request), &mut req_mem, &mut has_req_mem),
                (positive(c.cpu_limit), &mut lim_cpu, &mut has_lim_cpu),
                (positive(c.memory_limit), &mut lim_mem, &mut has_lim_mem),
            ] {
                if let Some(v) = v {
                    *sum += v;
                    *has = true;
                    any = true;
                }
            }
            if positive(c.cpu_limit).is_none() || positive(c.memory_limit).is_none() {
                guaranteed = false;
            }
        }
        if !any {
            return Qos::BestEffort;
        }
        let requests = [(has_req_cpu, req_cpu), (has_req_mem, req_mem)];
        let limits = [(has_lim_cpu, lim_cpu), (has_lim_mem, lim_mem)];
        let count = |xs: &[(bool, u64)]| xs.iter().filter(|(h, _)| *h).count();
        if guaranteed && count(&requests) == count(&limits) && requests == limits {
            Qos::Guaranteed
        } else {
            Qos::Burstable
        }
    }
}

/// `GetContainerOOMScoreAdjust` (no node-critical pods on one host): Guaranteed -997,
/// BestEffort 1000, Burstable `1000 - 1000 * request / capacity` kept within 3..=999.
pub fn oom_score_adj(qos: Qos, memory_request: Option<u64>, memory_capacity: u64) -> i32 {
    match qos {
        Qos::Guaranteed => -997,
        Qos::BestEffort => 1000,
        Qos::Burstable => {
            let request = memory_request.unwrap_or(0) as i128;
            let adjust = 1000 - (1000 * request) / memory_capacity.max(1) as i128;
            if adjust < 1000 - 997 {
                1000 - 997
            } else if adjust == 1000 {
                999
            } else {
                adjust as i32
            }
        }
    }
}

/// What the host offers pods, kubelet's node allocatable: a limit not set reads as it in the
/// downward API (`MergeContainerResourceLimits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocatable {
    /// Millicores: every online CPU (kubelet reserves none by default).
    pub cpu: u64,
    /// Bytes: the host's memory less kubelet's default hard eviction threshold
    /// (`memory.available<100Mi`).
    pub memory: u64,
}

impl Allocatable {
    /// This host's, read once.
    pub fn host() -> Allocatable {
        static HOST: std::sync::OnceLock<Allocatable> = std::sync::OnceLock::new();
        *HOST.get_or_init(|| {
            // "0-1,4-7": the online CPUs, as cAdvisor counts the node's.
            let online =
                std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
            let cpus: u64 = online
                .trim()
                .split(',')
                .filter_map(|range| match range.split_once('-') {
                    Some((a, b)) => Some(b.parse::<u64>().ok()? + 1 - a.parse::<u64>().ok()?),
                    None => range.parse::<u64>().ok().map(|_| 1),
                })
                .sum::<u64>()
                .max(1);
            Allocatable {
                cpu: cpus * 1000,
                memory: memory_capacity().saturating_sub(100 << 20),
            }
        })
    }
}

/// The host's memory, as kubelet reads the node's capacity (`MemTotal`); read once.
pub fn memory_capacity() -> u64 {
    static CAPACITY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *CAPACITY.get_or_init(|| {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(u64::MAX, |kib| kib * 1024)
    })
}

/// A `resourceFieldRef`'s value (kubelet's `ExtractContainerResourceValue`): the request or
/// limit over the divisor, rounded up; a limit not set is the host's allocatable amount, a
/// request not set is 0.
pub fn field_value(resource: &str, divisor: u64, r: &Resources, node: Allocatable) -> String {
    let value = match resource {
        "limits.cpu" => r.cpu_limit.unwrap_or(node.cpu),
        "limits.memory" => r.memory_limit.unwrap_or(node.memory),
        "requests.cpu" => r.cpu_request.unwrap_or(0),
        "requests.memory" => r.memory_request.unwrap_or(0),
        _ => 0,
    };
    value.div_ceil(divisor.max(1)).to_string()
}

/// The page size of huge-page resource `hugepages-<size>` in bytes
/// (`HugePageSizeFromResourceName`): a positive whole number of bytes, else `None`.
pub fn huge_page_size(name: &str) -> Option<u64> {
    let size = name.strip_prefix("hugepages-")?;
    let q = super::quantity::Quantity::parse(size).ok()?;
    // `pageSize.MilliValue() % 1000 == 0`, and positive.
    (!q.is_negative() && q.millis()? % 1000 == 0)
        .then(|| q.units())
        .flatten()
        .filter(|b| *b > 0)
}

/// A page size as kubelet names its resource (`HugePageResourceName`, the quantity's canonical
/// binary form): 2097152 -> `hugepages-2Mi`.
pub fn huge_page_name(size: u64) -> String {
    format!("hugepages-{}", binary_quantity(size))
}

/// `size` in the largest binary suffix that divides it (`2Mi`, `1Gi`, `512Ki`).
pub fn binary_quantity(bytes: u64) -> String {
    let units = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let (mut value, mut i) = (bytes, 0);
    while value != 0 && value % 1024 == 0 && i + 1 < units.len() {
        value /= 1024;
        i += 1;
    }
    format!("{value}{}", units[i])
}

/// The kernel's name for a page size in hugetlb cgroup files (`hugetlb.2MB.max`,
/// `hugetlb.1GB.limit_in_bytes`): as runc's `HugePageSizes` names them.
pub fn hugetlb_size_name(size: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB"];
    let (mut value, mut i) = (size, 0);
    while value >= 1024 && value % 1024 == 0 && i + 1 < units.len() {
        value /= 1024;
        i += 1;
    }
    format!("{value}{}", units[i])
}

/// The huge page sizes this kernel offers (`/sys/kernel/mm/hugepages/hugepages-<kB>kB`), in
/// bytes, each with its pages set aside (`nr_hugepages`): kubelet's node capacity of
/// `hugepages-<size>` is their product.
pub fn host_huge_pages() -> BTreeMap<u64, u64> {
    let mut sizes = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return sizes;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(kib) = name
            .to_str()
            .and_then(|n| n.strip_prefix("hugepages-"))
            .and_then(|n| n.strip_suffix("kB"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let pages = std::fs::read_to_string(entry.path().join("nr_hugepages"))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0);
        sizes.insert(kib * 1024, pages);
    }
    sizes
}

/// The huge pages a pod holds, per page size, as kubelet sums them for the pod's cgroup and
/// kube-scheduler for the node (`PodRequests`): the app containers and native sidecars
/// together, or an init container with the sidecars started before it, whichever is more.
/// `members` in order: (is a run-to-completion init container, is a native sidecar, its pages).
pub fn pod_huge_pages<'a>(
    members: impl IntoIterator<Item = (bool, bool, &'a BTreeMap<u64, u64>)>,
) -> BTreeMap<u64, u64> {
    let mut sum: BTreeMap<u64, u64> = BTreeMap::new();
    let mut sidecars: BTreeMap<u64, u64> = BTreeMap::new();
    let mut init_max: BTreeMap<u64, u64> = BTreeMap::new();
    for (init, sidecar, pages) in members {
        for (size, bytes) in pages {
            if init {
                let with = bytes + sidecars.get(size).copied().unwrap_or(0);
                let max = init_max.entry(*size).or_default();
                *max = (*max).max(with);
            } else {
                *sum.entry(*size).or_default() += bytes;
                if sidecar {
                    *sidecars.entry(*size).or_default() += bytes;
                }
            }
        }
    }
    for (size, max) in init_max {
        let total = sum.entry(size).or_default();
        *total = (*total).max(max);
    }
    sum.retain(|_, b| *b > 0);
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::quantity::Quantity;

    fn r(cr: Option<u64>, cl: Option<u64>, mr: Option<u64>, ml: Option<u64>) -> Resources {
        Resources {
            cpu_request: cr,
            cpu_limit: cl,
            memory_request: mr,
            memory_limit: ml,
        }
        .defaulted()
    }

    #[test]
    fn shares_and_quota_as_kubelet_computes_them() {
        assert_eq!(cpu_shares(None), 2);
        assert_eq!(cpu_shares(Some(1)), 2);
        assert_eq!(cpu_shares(Some(250)), 256);
        assert_eq!(cpu_shares(Some(1000)), 1024);
        assert_eq!(cpu_shares(Some(1_000_000)), 262_144);
        assert_eq!(cpu_quota(None), None);
        assert_eq!(cpu_quota(Some(500)), Some((50_000, 100_000)));
        assert_eq!(cpu_quota(Some(1)), Some((1000, 100_000)));
        assert_eq!(cpu_quota(Some(2500)), Some((250_000, 100_000)));
    }

    #[test]
    fn qos_classes() {
        assert_eq!(Qos::of(&[Resources::default()]), Qos::BestEffort);
        let both = r(None, Some(500), None, Some(64 << 20));
        assert_eq!(
            Qos::of(&[both]),
            Qos::Guaranteed,
            "limits only: requests default to them"
        );
        assert_eq!(Qos::of(&[both, Resources::default()]), Qos::Burstable);
        assert_eq!(Qos::of(&[r(Some(100), None, None, None)]), Qos::Burstable);
        assert_eq!(
            Qos::of(&[r(Some(100), Some(200), Some(1), Some(1))]),
            Qos::Burstable,
            "request below the limit"
        );
        assert_eq!(
            Qos::of(&[r(None, Some(500), None, None)]),
            Qos::Burstable,
            "no memory limit"
        );
    }

    #[test]
    fn oom_score_adjust() {
        let gib = 1 << 30;
        assert_eq!(oom_score_adj(Qos::Guaranteed, Some(gib), 8 * gib), -997);
        assert_eq!(oom_score_adj(Qos::BestEffort, None, 8 * gib), 1000);
        assert_eq!(oom_score_adj(Qos::Burstable, Some(gib), 8 * gib), 875);
        assert_eq!(oom_score_adj(Qos::Burstable, None, 8 * gib), 999);
        assert_eq!(oom_score_adj(Qos::Burstable, Some(8 * gib), 8 * gib), 3);
    }

    #[test]
    fn downward_api_values_round_up_and_default_limits_to_the_node() {
        let node = Allocatable {
            cpu: 2000,
            memory: 1 << 30,
        };
        let limited = r(Some(250), Some(500), None, Some(64 << 20));
        assert_eq!(field_value("limits.cpu", 1, &limited, node), "500");
        assert_eq!(field_value("limits.cpu", 1000, &limited, node), "1");
        assert_eq!(field_value("requests.cpu", 1, &limited, node), "250");
        assert_eq!(field_value("limits.memory", 1 << 20, &limited, node), "64");
        assert_eq!(
            field_value("requests.memory", 1, &limited, node),
            "67108864"
        );
        let open = Resources::default();
        assert_eq!(field_value("limits.cpu", 1000, &open, node), "2");
        assert_eq!(field_value("limits.memory", 1 << 20, &open, node), "1024");
        assert_eq!(field_value("requests.memory", 1, &open, node), "0");
    }

    #[test]
    fn huge_page_names_and_sizes() {
        assert_eq!(huge_page_size("hugepages-2Mi"), Some(2 << 20));
        assert_eq!(huge_page_size("hugepages-1Gi"), Some(1 << 30));
        assert_eq!(huge_page_size("hugepages-2M"), Some(2_000_000));
        assert_eq!(huge_page_size("hugepages-0"), None);
        assert_eq!(huge_page_size("hugepages-x"), None);
        assert_eq!(huge_page_size("hugepages-500m"), None);
        assert_eq!(huge_page_name(2 << 20), "hugepages-2Mi");
        assert_eq!(huge_page_name(1 << 30), "hugepages-1Gi");
        assert_eq!(hugetlb_size_name(2 << 20), "2MB");
        assert_eq!(hugetlb_size_name(1 << 30), "1GB");
        assert_eq!(hugetlb_size_name(64 << 10), "64KB");
    }

    #[test]
    fn pod_huge_pages_as_kube_scheduler_sums_them() {
        let two = |n: u64| BTreeMap::from([(2u64 << 20, n << 21)]);
        let (a, b, c) = (two(1), two(2), two(4));
        // Two app containers add up; an init container smaller than them changes nothing.
        let total = pod_huge_pages([(true, false, &a), (false, false, &a), (false, false, &b)]);
        assert_eq!(total, two(3));
        // A larger init container wins, with the sidecar started before it.
        let total = pod_huge_pages([(false, true, &a), (true, false, &c), (false, false, &a)]);
        assert_eq!(total, two(5));
    }

    #[test]
    fn quantities_feed_it() {
        let cpu = Quantity::parse("250m").expect("parses").millis();
        let mem = Quantity::parse("64Mi").expect("parses").units();
        assert_eq!(cpu_shares(cpu), 256);
        assert_eq!(mem, Some(64 << 20));
    }
}
