//! The event system's time: the runtime's one [`Clock`] (see
//! [`crate::clock`]). Tests advance a [`ManualClock`], then ask the dispatcher to
//! [`tick`](crate::events::EventsHandle::tick), instead of sleeping.

use std::time::Duration;

pub use crate::clock::{Clock, ManualClock, SystemClock};

/// Adds a duration to a timestamp, saturating.
pub(crate) fn after(now: u64, d: Duration) -> u64 {
    now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_saturates() {
        assert_eq!(after(u64::MAX - 1, Duration::from_secs(1)), u64::MAX);
        assert_eq!(after(5, Duration::from_millis(10)), 15);
    }
}
