//! Time, injectable: the one clock type of runtimes and nodes.
//!
//! Every time-dependent rule reads a [`Clock`] in milliseconds since the Unix
//! epoch (UTC): policy conditions (time of day, weekdays, rates), the event system
//! (expiry, reference timeouts, retransmission backoff, RPC deadlines), and on a
//! node the domain registry (expiry, keep-alive), the identity provider and module
//! (token lifetimes, key rotation, key caches) and the address holders' retention.
//! A runtime or a node creates **one** `Arc<dyn Clock>` at start-up and hands that
//! same instance to each of those components, so they never disagree about "now".
//! Production uses [`SystemClock`]; tests use a [`ManualClock`] and move it instead
//! of sleeping.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use hyperty_actors::clock::{utc_ms, Clock, ManualClock};
//!
//! let clock = ManualClock::new(utc_ms(2024, 1, 1, 12, 0, 0));
//! // the instance handed to the components; clones of a ManualClock share its time
//! let shared: Arc<dyn Clock> = Arc::new(clock.clone());
//! clock.advance(Duration::from_millis(250));
//! assert_eq!(shared.now_ms(), utc_ms(2024, 1, 1, 12, 0, 0) + 250);
//! assert_eq!(shared.now_secs(), utc_ms(2024, 1, 1, 12, 0, 0) / 1000);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of "now", in milliseconds since 1970-01-01 UTC.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Now.
    fn now_ms(&self) -> u64;

    /// Now, in whole seconds since the epoch (token and record times).
    fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }

    /// Now, as a [`SystemTime`] (registry deadlines and RFC 3339 stamps).
    fn system_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.now_ms())
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
pub struct ManualClock {
    ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock showing `start_ms`.
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock {
            ms: Arc::new(AtomicU64::new(start_ms)),
        }
    }

    /// A clock showing the system's current time, from which it then moves only
    /// when told to.
    pub fn starting_now() -> ManualClock {
        ManualClock::new(SystemClock.now_ms())
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.ms.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the time.
    pub fn set(&self, ms: u64) {
        self.ms.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
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

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::new(5);
        let b = a.clone();
        a.advance(Duration::from_secs(1));
        assert_eq!(b.now_ms(), 1_005);
        b.set(7);
        assert_eq!(a.now_ms(), 7);
    }

    #[test]
    fn seconds_and_system_time_follow_the_milliseconds() {
        let c = ManualClock::new(utc_ms(2024, 1, 1, 0, 0, 0) + 1_999);
        assert_eq!(c.now_secs(), utc_ms(2024, 1, 1, 0, 0, 1) / 1000);
        assert_eq!(
            c.system_time(),
            UNIX_EPOCH + Duration::from_millis(c.now_ms())
        );
        let now = ManualClock::starting_now();
        assert!(now.now_ms() > utc_ms(2020, 1, 1, 0, 0, 0));
    }
}
