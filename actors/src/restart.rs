//! Restart intensity: how many restarts of one child within a window the
//! supervisor tolerates before it gives up (Erlang/OTP's intensity/period).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Default: 5 restarts of one child within 60 s. A child failing faster
/// than that is not recovering; exiting lets systemd restart the daemon
/// with a clean process.
pub const DEFAULT_MAX_RESTARTS: u32 = 5;
pub const DEFAULT_RESTART_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartLimit {
    pub max_restarts: u32,
    pub window: Duration,
}

impl Default for RestartLimit {
    fn default() -> Self {
        RestartLimit {
            max_restarts: DEFAULT_MAX_RESTARTS,
            window: DEFAULT_RESTART_WINDOW,
        }
    }
}

/// Failure times per child.
#[derive(Debug, Default)]
pub struct RestartTracker {
    limit: RestartLimit,
    failures: HashMap<&'static str, VecDeque<Instant>>,
}

impl RestartTracker {
    pub fn new(limit: RestartLimit) -> Self {
        RestartTracker {
            limit,
            failures: HashMap::new(),
        }
    }

    /// Records a failure of `child` at `now`. `true`: restart it; `false`:
    /// the limit is exceeded (more than `max_restarts` within `window`).
    pub fn allow_restart(&mut self, child: &'static str, now: Instant) -> bool {
        let times = self.failures.entry(child).or_default();
        times.push_back(now);
        while let Some(&first) = times.front() {
            if now.duration_since(first) > self.limit.window {
                times.pop_front();
            } else {
                break;
            }
        }
        times.len() as u64 <= u64::from(self.limit.max_restarts)
    }

    /// Failures of `child` inside the current window.
    pub fn recent_failures(&self, child: &'static str) -> usize {
        self.failures.get(child).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_max_restarts_per_window_per_child() {
        let limit = RestartLimit {
            max_restarts: 2,
            window: Duration::from_secs(60),
        };
        let mut t = RestartTracker::new(limit);
        let t0 = Instant::now();
        assert!(t.allow_restart("scheduler", t0));
        assert!(t.allow_restart("scheduler", t0 + Duration::from_secs(1)));
        assert!(t.allow_restart("notifier", t0 + Duration::from_secs(2)));
        assert!(!t.allow_restart("scheduler", t0 + Duration::from_secs(3)));
        // old failures leave the window
        let mut t = RestartTracker::new(limit);
        assert!(t.allow_restart("pool", t0));
        assert!(t.allow_restart("pool", t0 + Duration::from_secs(30)));
        assert!(t.allow_restart("pool", t0 + Duration::from_secs(61)));
        assert_eq!(t.recent_failures("pool"), 2);
    }
}
