//! Rate-limited warnings: a condition that repeats on every scan (a file that cannot be opened
//! at the open-file limit, a FIFO in the log directory) is logged a few times per window, and
//! the count of the lines left out is logged with the next one (or on its own once the window
//! is over), so a flood of events is not a flood of log lines.

use std::time::{Duration, Instant};

/// One kind of warning's budget: `burst` lines per `window`.
#[derive(Debug)]
pub(crate) struct Throttle {
    window: Duration,
    burst: u32,
    started: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl Throttle {
    pub(crate) fn new(window: Duration, burst: u32) -> Self {
        Throttle {
            window,
            burst,
            started: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged now; `Some(n)`: yes, and `n` lines were left out before it.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.started.is_none_or(|s| now >= s + self.window) {
            self.started = Some(now);
            self.used = 0;
        }
        if self.used < self.burst {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// Lines left out in a window that is over, to be reported on their own.
    pub(crate) fn overdue(&mut self, now: Instant) -> Option<u64> {
        let over = self.started.is_some_and(|s| now >= s + self.window);
        (over && self.suppressed > 0).then(|| {
            self.started = None;
            std::mem::take(&mut self.suppressed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_counts_what_it_left_out() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(10), 2);
        assert_eq!(t.allow(t0), Some(0));
        assert_eq!(t.allow(t0), Some(0));
        for _ in 0..5 {
            assert_eq!(t.allow(t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(t.overdue(t0 + Duration::from_secs(9)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(t.allow(t0 + Duration::from_secs(11)), Some(0));
        assert_eq!(t.allow(t0 + Duration::from_secs(11)), None);
        assert_eq!(t.overdue(t0 + Duration::from_secs(20)), Some(1));
        assert_eq!(t.overdue(t0 + Duration::from_secs(30)), None);
    }
}
