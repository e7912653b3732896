//! What the benchmark reads about processes: CPU seconds and peak resident memory from
//! `getrusage` (this process, or its waited-for children), the current resident set from
//! `/proc/self/status`, and the load average from `/proc/loadavg`.

use nix::sys::resource::{UsageWho, getrusage};
use serde::Serialize;

/// CPU time and peak RSS of a process (or of its waited-for children) so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub user_s: f64,
    pub sys_s: f64,
    /// Peak resident set, KiB (`ru_maxrss`; on Linux already in KiB).
    pub max_rss_kib: u64,
}

impl Usage {
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }

    /// CPU spent between `earlier` and `self`.
    pub fn cpu_since(&self, earlier: &Usage) -> f64 {
        (self.cpu_s() - earlier.cpu_s()).max(0.0)
    }
}

fn read(who: UsageWho) -> Usage {
    match getrusage(who) {
        Ok(u) => {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            Usage {
                user_s: secs(u.user_time()),
                sys_s: secs(u.system_time()),
                max_rss_kib: u.max_rss().max(0) as u64,
            }
        }
        // getrusage cannot fail for these arguments; zeros are visible in the report if it did.
        Err(_) => Usage::default(),
    }
}

/// This process.
pub fn own() -> Usage {
    read(UsageWho::RUSAGE_SELF)
}

/// Every child process this process has waited for.
pub fn children() -> Usage {
    read(UsageWho::RUSAGE_CHILDREN)
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of this process now, KiB (0 where `/proc` is missing).
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// The 1, 5 and 15 minute load averages (zeros where `/proc` is missing).
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One RSS sample taken during a run.
#[derive(Debug, Clone, Serialize)]
pub struct RssSample {
    /// Seconds since the pipeline started.
    pub t_s: f64,
    pub rss_mib: f64,
    /// Events committed so far.
    pub committed: i64,
    /// Whether Postgres was held stalled at that moment.
    pub stalled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_usage_grows_with_work_and_rss_is_visible() {
        let before = own();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = own();
        assert!(after.cpu_since(&before) >= 0.0);
        assert!(after.max_rss_kib > 0);
        assert!(rss_kib() > 0);
    }
}
