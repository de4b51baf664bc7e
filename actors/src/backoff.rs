//! Retry delays: exponential backoff with full jitter.

use std::time::Duration;

use crate::job::RetryPolicy;

/// Delay before attempt `next_attempt` (2 for the first retry): a uniform
/// draw from [d/2, d] where d = backoff * 2^(next_attempt - 2), capped at
/// `backoff_max`. Half-jitter keeps retries of many runs from landing
/// together while still guaranteeing a minimum wait.
pub fn retry_delay(policy: &RetryPolicy, next_attempt: u32, unit_random: f64) -> Duration {
    let exponent = next_attempt.saturating_sub(2).min(31);
    let full = policy
        .backoff
        .saturating_mul(1u32 << exponent)
        .min(policy.backoff_max);
    let fraction = 0.5 + 0.5 * unit_random.clamp(0.0, 1.0);
    full.mul_f64(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_attempt_within_jitter_and_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            backoff: Duration::from_secs(2),
            backoff_max: Duration::from_secs(30),
        };
        assert_eq!(retry_delay(&p, 2, 1.0), Duration::from_secs(2));
        assert_eq!(retry_delay(&p, 2, 0.0), Duration::from_secs(1));
        assert_eq!(retry_delay(&p, 3, 1.0), Duration::from_secs(4));
        assert_eq!(retry_delay(&p, 4, 1.0), Duration::from_secs(8));
        assert_eq!(retry_delay(&p, 9, 1.0), Duration::from_secs(30));
        assert_eq!(retry_delay(&p, 9, 0.0), Duration::from_secs(15));
        assert_eq!(retry_delay(&p, u32::MAX, 1.0), Duration::from_secs(30));
    }
}
