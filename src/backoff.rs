//! Retry timing shared by the Kubernetes client, leader election and notification delivery:
//! an exponential schedule with a cap, how a delay is jittered, and the one random source.
//!
//! Everything but [`random_unit`] is a pure function of its inputs (the random value is passed
//! in), so the tables below pin the exact delays; callers draw the random value from
//! [`random_unit`] at the moment they wait.

use std::time::Duration;

/// `base · 2^attempt`, never more than `cap`; `attempt` counts from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exponential {
    pub(crate) base: Duration,
    pub(crate) cap: Duration,
}

impl Exponential {
    /// The un-jittered delay before retry number `attempt + 1`.
    pub(crate) fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        self.base.saturating_mul(factor).min(self.cap)
    }
}

/// How a delay is spread over time, so that many clients failing together do not retry in
/// lockstep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Jitter {
    /// Uniform in `[0, d)` ("full jitter", AWS Architecture Blog, "Exponential Backoff And
    /// Jitter"): the best spread when every agent retries the same outage (a Slack incident).
    Full,
    /// Uniform in `[d, d · (1 + factor))`, never shorter than `d`, like client-go's
    /// `wait.Jitter(d, factor)`: for waits that must not shrink (a Lease retry period, a
    /// request retry that the server's load calls for).
    Up(f64),
}

/// Applies `jitter` to `d`. `unit` is a random value in `[0, 1)` (out-of-range values are
/// clamped, NaN counts as 0).
pub(crate) fn jittered(d: Duration, jitter: Jitter, unit: f64) -> Duration {
    let unit = if unit.is_nan() {
        0.0
    } else {
        unit.clamp(0.0, 1.0)
    };
    match jitter {
        Jitter::Full => d.mul_f64(unit),
        Jitter::Up(factor) => d.saturating_add(d.mul_f64(factor.max(0.0) * unit)),
    }
}

/// A uniformly distributed value in `[0, 1)` from the operating system's random source (ring
/// is already linked as the TLS crypto provider). If the source fails, the middle of the range:
/// a retry is then merely less spread, never wrong.
pub(crate) fn random_unit() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    // 53 random bits → an exactly representable fraction below 1.
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn exponential_table() {
        let e = Exponential {
            base: ms(500),
            cap: ms(8000),
        };
        let cases = [
            (0, ms(500)),
            (1, ms(1000)),
            (4, ms(8000)),
            (5, ms(8000)),
            (31, ms(8000)),
            (u32::MAX, ms(8000)),
        ];
        for (attempt, want) in cases {
            assert_eq!(e.ceiling(attempt), want, "attempt {attempt}");
        }
        let huge = Exponential {
            base: Duration::from_secs(u64::MAX / 2),
            cap: Duration::MAX,
        };
        assert_eq!(huge.ceiling(3), Duration::MAX, "saturates, never panics");
    }

    #[test]
    fn jitter_table() {
        let cases = [
            (ms(1000), Jitter::Full, 0.0, ms(0)),
            (ms(1000), Jitter::Full, 0.5, ms(500)),
            (ms(1000), Jitter::Full, 7.0, ms(1000)),
            (ms(1000), Jitter::Full, -1.0, ms(0)),
            (ms(1000), Jitter::Full, f64::NAN, ms(0)),
            (ms(1000), Jitter::Up(0.25), 0.0, ms(1000)),
            (ms(1000), Jitter::Up(0.25), 0.5, ms(1125)),
            (ms(2000), Jitter::Up(1.2), 0.5, ms(3200)),
            (ms(2000), Jitter::Up(1.2), 1.0, ms(4400)),
            (ms(2000), Jitter::Up(-3.0), 1.0, ms(2000)),
        ];
        for (d, jitter, unit, want) in cases {
            assert_eq!(jittered(d, jitter, unit), want, "{d:?} {jitter:?} {unit}");
        }
    }

    #[test]
    fn random_units_are_in_range_and_vary() {
        let draws: Vec<f64> = (0..64).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)), "{draws:?}");
        assert!(draws.iter().any(|u| *u != draws[0]), "{draws:?}");
    }
}
