//! The clock policy conditions are read on: the runtime's one [`Clock`] (see
//! [`crate::clock`]).
//!
//! Time-of-day, weekday and rate conditions look at [`PolicyRequest::now_ms`]
//! (milliseconds since the Unix epoch, UTC). The PEP fills it from a [`Clock`]:
//! [`SystemClock`] in production, [`ManualClock`] in tests.
//!
//! [`PolicyRequest::now_ms`]: super::PolicyRequest::now_ms

pub use crate::clock::{utc_ms, Clock, ManualClock, SystemClock};
