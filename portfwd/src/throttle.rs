//! Rate-limited warnings: an error that repeats per connection, per datagram or per accept
//! (a target that refuses every dial, the open-file limit) is logged a few times per window and
//! the number left out is reported with the next line, so a flood of clients is not a flood of
//! log lines.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How many lines a kind of warning may log per window...
pub(crate) const BURST: u32 = 3;
/// ...of this length.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// One kind of warning's budget.
#[derive(Debug)]
pub(crate) struct Throttle {
    window: Duration,
    burst: u32,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    started: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl Throttle {
    pub(crate) fn new(window: Duration, burst: u32) -> Self {
        Throttle {
            window,
            burst,
            state: Mutex::default(),
        }
    }

    /// Whether a line may be logged now; `Some(n)`: yes, and `n` were left out before it.
    pub(crate) fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        // Plain counters, consistent after any panic: take them anyway.
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.started.is_none_or(|start| now >= start + self.window) {
            s.started = Some(now);
            s.used = 0;
        }
        if s.used < self.burst {
            s.used += 1;
            Some(std::mem::take(&mut s.suppressed))
        } else {
            s.suppressed += 1;
            None
        }
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(WINDOW, BURST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_counts_what_it_left_out() {
        let t0 = Instant::now();
        let t = Throttle::new(Duration::from_secs(10), 2);
        assert_eq!(t.allow_at(t0), Some(0));
        assert_eq!(t.allow_at(t0), Some(0));
        for _ in 0..7 {
            assert_eq!(t.allow_at(t0 + Duration::from_secs(9)), None);
        }
        assert_eq!(t.allow_at(t0 + Duration::from_secs(10)), Some(7));
        assert_eq!(t.allow_at(t0 + Duration::from_secs(10)), Some(0));
    }
}
