//! The clock policy conditions are read on, injectable for tests.
//!
//! Time-of-day, weekday and rate conditions look at [`PolicyRequest::now_ms`]
//! (milliseconds since the Unix epoch, UTC). The PEP fills it from a [`Clock`]:
//! [`SystemClock`] in production, [`ManualClock`] in tests.
//!
//! ```
//! use hyperty_actors::policy::{Clock, ManualClock};
//!
//! let clock = ManualClock::at(1_000);
//! clock.advance(500);
//! assert_eq!(clock.now_ms(), 1_500);
//! ```
//!
//! [`PolicyRequest::now_ms`]: super::PolicyRequest::now_ms

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch (UTC).
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now_ms(&self) -> u64;
}

impl fmt::Debug for dyn Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Clock({})", self.now_ms())
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock showing `ms`.
    pub fn at(ms: u64) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(ms)))
    }

    /// Sets the time.
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Relaxed);
    }

    /// Moves the time forward.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Milliseconds of a UTC date and time (proleptic Gregorian), for tests and
/// examples: `utc_ms(2024, 1, 1, 9, 30, 0)`.
pub fn utc_ms(year: i64, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> u64 {
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    u64::try_from(secs).unwrap_or(0) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(utc_ms(1970, 1, 1, 0, 0, 0), 0);
        assert_eq!(utc_ms(2000, 3, 1, 0, 0, 0), 951_868_800_000);
        assert_eq!(utc_ms(2024, 2, 29, 12, 0, 1), 1_709_208_001_000);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_ms() > utc_ms(2020, 1, 1, 0, 0, 0));
    }
}
