//! A retry budget (Finagle's and linkerd's): retries may add at most a share of the calls
//! made, plus a small floor so that a quiet service can still retry.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long calls and retries count towards the budget.
const WINDOW: Duration = Duration::from_secs(10);
/// The window's slices: each one second.
const SLICES: usize = 10;

/// Limits retries to `ratio` of the calls made plus `min_per_second` over a 10-second
/// window, shared by every call that uses it (one budget per backend group): in any 10 s,
/// retries ≤ `ratio` × calls + 10 × `min_per_second`. A retry the budget refuses is not
/// made, and the call ends with the answer it had.
///
/// ```
/// use grpcproxy::policy::RetryBudget;
///
/// let budget = RetryBudget::new(0.2, 0);
/// for _ in 0..10 {
///     budget.deposit();
/// }
/// assert!(budget.try_withdraw());
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw()); // 20 % of 10 calls
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: u32,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    /// The slice `slice_at` was last written in, in slices since `start`.
    current: u64,
    calls: [u64; SLICES],
    retries: [u64; SLICES],
}

impl Window {
    /// Moves the window to `now`, clearing the slices that fell out of it.
    fn advance(&mut self, now: Instant) -> usize {
        let slice = now.duration_since(self.start).as_secs();
        let stale = slice.saturating_sub(self.current).min(SLICES as u64);
        for step in 1..=stale {
            let i = ((self.current + step) % SLICES as u64) as usize;
            self.calls[i] = 0;
            self.retries[i] = 0;
        }
        self.current = self.current.max(slice);
        (self.current % SLICES as u64) as usize
    }
}

impl RetryBudget {
    /// A budget of `ratio` (0 to 1) of the calls, plus `min_per_second` retries per second.
    pub fn new(ratio: f64, min_per_second: u32) -> Self {
        Self {
            ratio: ratio.clamp(0.0, 1.0),
            min_per_second,
            window: Mutex::new(Window {
                start: Instant::now(),
                current: 0,
                calls: [0; SLICES],
                retries: [0; SLICES],
            }),
        }
    }

    /// Counts one call (its first try).
    pub fn deposit(&self) {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let i = window.advance(Instant::now());
        window.calls[i] += 1;
    }

    /// Takes one retry from the budget; false (and nothing taken) when it is spent.
    pub fn try_withdraw(&self) -> bool {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let i = window.advance(Instant::now());
        let calls: u64 = window.calls.iter().sum();
        let retries: u64 = window.retries.iter().sum();
        let allowed =
            self.ratio * calls as f64 + f64::from(self.min_per_second) * WINDOW.as_secs_f64();
        if (retries + 1) as f64 > allowed {
            return false;
        }
        window.retries[i] += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_allows_retries_without_calls() {
        let budget = RetryBudget::new(0.0, 1);
        let allowed = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn slices_older_than_the_window_are_forgotten() {
        let mut window = Window {
            start: Instant::now() - Duration::from_secs(25),
            current: 3,
            calls: [1; SLICES],
            retries: [1; SLICES],
        };
        window.advance(Instant::now());
        assert_eq!(window.calls.iter().sum::<u64>(), 0);
        assert_eq!(window.current, 25);
    }
}
