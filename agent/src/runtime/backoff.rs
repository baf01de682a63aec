//! Retry delays and rotation times, both randomized so that many agents (and many SVIDs of one
//! agent) never act in lockstep.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// Exponential backoff with "equal jitter": the n-th delay is drawn uniformly from
/// `[d/2, d]` where `d = min(cap, base * 2^n)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base` and never exceeding `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next delay (and counts one more failure).
    pub fn next_delay(&mut self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        let d = self.base.saturating_mul(factor).min(self.cap);
        let half = d / 2;
        half + half.mul_f64(rand::rng().random_range(0.0..=1.0))
    }

    /// Forgets the failures (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Number of failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.attempt
    }
}

/// Lower and upper bound of the renewal point, as fractions of an SVID's lifetime.
pub const RENEW_WINDOW: (f64, f64) = (0.5, 0.6);

/// When to renew a certificate valid from `not_before` to `not_after`: at a uniformly random point
/// between 50 % and 60 % of its lifetime, so that SVIDs issued together are renewed apart, well
/// before they expire.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let f = rand::rng().random_range(RENEW_WINDOW.0..RENEW_WINDOW.1);
    not_before + lifetime.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let d0 = b.next_delay();
        assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
        let d1 = b.next_delay();
        assert!(d1 >= Duration::from_millis(100) && d1 <= Duration::from_millis(200));
        for _ in 0..3 {
            b.next_delay(); // 400 ms, 800 ms, 1.6 s
        }
        for _ in 0..37 {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(2),
                "{d:?}"
            );
        }
        assert_eq!(b.failures(), 42);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn renewal_points_are_spread_inside_the_window() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let na = nb + Duration::from_secs(1_000);
        let points: Vec<SystemTime> = (0..200).map(|_| renew_at(nb, na)).collect();
        for p in &points {
            assert!(*p >= nb + Duration::from_secs(500) && *p < nb + Duration::from_secs(600));
        }
        let distinct: std::collections::HashSet<_> = points.iter().collect();
        assert!(distinct.len() > 150, "renewal points must not coincide");
        // A certificate whose dates are reversed renews at once.
        assert_eq!(renew_at(na, nb), na);
    }
}
