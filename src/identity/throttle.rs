//! [`LoginThrottle`]: failed-login backoff per account and per source, which a
//! password flood cannot turn into a lock-out of the real user.
//!
//! Three counters are kept, each with its own allowance of failures before an
//! exponential backoff starts ([`ThrottleConfig`]):
//!
//! * **account × source** (`account_free_failures`): one source guessing one
//!   account. Only this source is held back; the real user, elsewhere, is not.
//! * **source** (`source_free_failures`): one source guessing many accounts.
//! * **account** (`account_wide_free_failures`): many sources guessing one
//!   account. Each source adds only its first `account_free_failures` failures
//!   to it, so one source alone can never trip it, however long it keeps
//!   guessing. It holds back only sources that have **not** logged in to that
//!   account successfully within `trusted_source_secs`, so the real user's usual
//!   places keep working during a distributed flood; a trusted source also passes
//!   the source counter (a shared address).
//!
//! After `n` failures past an allowance the counter blocks for
//! `base_backoff_ms × 2^n`, at most `max_backoff_secs`; a blocked attempt is
//! answered 429 with the time left and costs no hash. An attempt that passes is
//! counted as a failure **when it starts**, so concurrent guesses cannot all slip
//! through before the first one fails; a success takes it back. A counter without
//! a failure for `forget_after_secs` starts again from zero.
//!
//! The table holds at most `max_entries` counters: expired ones are dropped
//! first, then the least recently used. Time is passed in (milliseconds), so the
//! tests use a manual clock.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Limits of the [`LoginThrottle`] (`[identity.login_throttle]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Failed logins of one source on one account before its backoff starts.
    pub account_free_failures: u32,
    /// Failed logins of one source, on any accounts, before its backoff starts.
    pub source_free_failures: u32,
    /// Failed logins on one account, from any sources, before sources that have
    /// not logged in to it recently are held back.
    pub account_wide_free_failures: u32,
    /// First backoff, milliseconds; it doubles with each further failure.
    pub base_backoff_ms: u64,
    /// Longest backoff, seconds.
    pub max_backoff_secs: u64,
    /// A counter with no failure for this long is forgotten, seconds.
    pub forget_after_secs: u64,
    /// How long a successful login makes its source trusted for the account,
    /// seconds.
    pub trusted_source_secs: u64,
    /// Most counters kept (accounts, sources and pairs together).
    pub max_entries: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            account_free_failures: 3,
            source_free_failures: 20,
            account_wide_free_failures: 100,
            base_backoff_ms: 1_000,
            max_backoff_secs: 900,
            forget_after_secs: 3_600,
            trusted_source_secs: 7 * 86_400,
            max_entries: 65_536,
        }
    }
}

impl ThrottleConfig {
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if self.account_free_failures == 0
            || self.source_free_failures == 0
            || self.account_wide_free_failures == 0
        {
            return Err("login_throttle: the failure allowances must be at least 1");
        }
        if self.base_backoff_ms == 0 || self.max_backoff_secs == 0 || self.forget_after_secs == 0 {
            return Err("login_throttle: backoff and forget times must be at least 1");
        }
        if self.max_entries < 3 {
            return Err("login_throttle: max_entries must be at least 3");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Pair(String, Option<IpAddr>),
    Source(Option<IpAddr>),
    Account(String),
}

#[derive(Debug, Clone, Copy, Default)]
struct Counter {
    failures: u32,
    blocked_until: u64,
    last: u64,
    trusted_until: u64,
}

/// What [`LoginThrottle::begin`] counted for an attempt; hand it back to
/// [`LoginThrottle::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    source: bool,
    account: bool,
}

/// How an attempt that [`LoginThrottle::begin`] let through ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The password was right.
    Succeeded,
    /// The password was wrong.
    Failed,
    /// No check happened (e.g. the hashing pool was full).
    NotTried,
}

/// The failed-login counters (see the module docs). Owned by the provider actor.
#[derive(Debug)]
pub(crate) struct LoginThrottle {
    cfg: ThrottleConfig,
    counters: HashMap<Key, Counter>,
}

impl LoginThrottle {
    pub(crate) fn new(cfg: ThrottleConfig) -> LoginThrottle {
        LoginThrottle {
            cfg,
            counters: HashMap::new(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.counters.len()
    }

    fn blocked(&self, key: &Key, now: u64) -> u64 {
        self.counters
            .get(key)
            .map_or(0, |c| c.blocked_until.saturating_sub(now))
    }

    /// Lets a login of `account` from `source` go ahead (and counts it as a
    /// failure until [`finish`](Self::finish) says otherwise), or answers how many
    /// milliseconds the caller must wait.
    pub(crate) fn begin(
        &mut self,
        account: &str,
        source: Option<IpAddr>,
        now: u64,
    ) -> Result<Ticket, u64> {
        let pair = Key::Pair(account.to_owned(), source);
        let src = Key::Source(source);
        let acct = Key::Account(account.to_owned());
        let trusted = self
            .counters
            .get(&pair)
            .is_some_and(|c| c.trusted_until > now);
        let mut wait = self.blocked(&pair, now);
        if !trusted {
            wait = wait
                .max(self.blocked(&src, now))
                .max(self.blocked(&acct, now));
        }
        if wait > 0 {
            return Err(wait);
        }
        let pair_failures = self.bump(pair, self.cfg.account_free_failures, now);
        let ticket = Ticket {
            source: !trusted,
            account: pair_failures <= self.cfg.account_free_failures,
        };
        if ticket.source {
            self.bump(src, self.cfg.source_free_failures, now);
        }
        if ticket.account {
            self.bump(acct, self.cfg.account_wide_free_failures, now);
        }
        Ok(ticket)
    }

    /// Settles an attempt [`begin`](Self::begin) let through.
    pub(crate) fn finish(
        &mut self,
        account: &str,
        source: Option<IpAddr>,
        ticket: Ticket,
        outcome: Attempt,
        now: u64,
    ) {
        if outcome == Attempt::Failed {
            return;
        }
        let pair = Key::Pair(account.to_owned(), source);
        if outcome == Attempt::Succeeded {
            let trust = now.saturating_add(self.cfg.trusted_source_secs.saturating_mul(1_000));
            if let Some(c) = self.counters.get_mut(&pair) {
                *c = Counter {
                    trusted_until: trust,
                    last: now,
                    ..Counter::default()
                };
            }
        } else {
            self.take_back(&pair, self.cfg.account_free_failures);
        }
        if ticket.source {
            self.take_back(&Key::Source(source), self.cfg.source_free_failures);
        }
        if ticket.account {
            self.take_back(
                &Key::Account(account.to_owned()),
                self.cfg.account_wide_free_failures,
            );
        }
    }

    fn take_back(&mut self, key: &Key, free: u32) {
        if let Some(c) = self.counters.get_mut(key) {
            c.failures = c.failures.saturating_sub(1);
            if c.failures < free {
                c.blocked_until = 0;
            }
        }
    }

    /// Counts a failure of `key`; answers its failures now.
    fn bump(&mut self, key: Key, free: u32, now: u64) -> u32 {
        let forget = self.cfg.forget_after_secs.saturating_mul(1_000);
        let base = self.cfg.base_backoff_ms;
        let max = self.cfg.max_backoff_secs.saturating_mul(1_000);
        if !self.counters.contains_key(&key) {
            self.make_room(now);
        }
        let c = self.counters.entry(key).or_default();
        if now.saturating_sub(c.last) > forget && c.blocked_until <= now {
            c.failures = 0;
        }
        c.failures = c.failures.saturating_add(1);
        c.last = now;
        if c.failures >= free {
            let doublings = (c.failures - free).min(63);
            let delay = base.saturating_mul(1u64 << doublings).min(max);
            c.blocked_until = now.saturating_add(delay);
        }
        c.failures
    }

    /// Frees a slot when the table is full: expired counters first, then the
    /// least recently used one.
    fn make_room(&mut self, now: u64) {
        if self.counters.len() < self.cfg.max_entries {
            return;
        }
        let forget = self.cfg.forget_after_secs.saturating_mul(1_000);
        self.counters.retain(|_, c| {
            c.blocked_until > now || c.trusted_until > now || now.saturating_sub(c.last) <= forget
        });
        if self.counters.len() >= self.cfg.max_entries {
            let oldest = self
                .counters
                .iter()
                .min_by_key(|(_, c)| c.last)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.counters.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const B: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(ThrottleConfig {
            account_free_failures: 3,
            source_free_failures: 10,
            account_wide_free_failures: 6,
            base_backoff_ms: 1_000,
            max_backoff_secs: 60,
            forget_after_secs: 600,
            trusted_source_secs: 3_600,
            max_entries: 1_000,
        })
    }

    /// One failed attempt at `now`: `Err(wait)` if it was refused.
    fn fail(
        t: &mut LoginThrottle,
        account: &str,
        src: Option<IpAddr>,
        now: u64,
    ) -> Result<(), u64> {
        let ticket = t.begin(account, src, now)?;
        t.finish(account, src, ticket, Attempt::Failed, now);
        Ok(())
    }

    /// One successful attempt at `now`: `Err(wait)` if it was refused.
    fn succeed(
        t: &mut LoginThrottle,
        account: &str,
        src: Option<IpAddr>,
        now: u64,
    ) -> Result<(), u64> {
        let ticket = t.begin(account, src, now)?;
        t.finish(account, src, ticket, Attempt::Succeeded, now);
        Ok(())
    }

    #[test]
    fn a_flooding_source_backs_off_exponentially() {
        let mut t = throttle();
        let mut now = 1_000_000;
        assert_eq!(fail(&mut t, "alice", A, now), Ok(()));
        assert_eq!(fail(&mut t, "alice", A, now), Ok(()));
        // the third failure starts the backoff: 1 s, then 2, 4, 8 … capped at 60
        assert_eq!(fail(&mut t, "alice", A, now), Ok(()));
        assert_eq!(fail(&mut t, "alice", A, now), Err(1_000));
        assert_eq!(fail(&mut t, "alice", A, now + 400), Err(600));
        let mut waits = Vec::new();
        for _ in 0..8 {
            let wait = t.begin("alice", A, now).unwrap_err();
            waits.push(wait);
            now += wait;
            assert_eq!(fail(&mut t, "alice", A, now), Ok(()));
        }
        assert_eq!(
            waits,
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
        );
    }

    #[test]
    fn the_real_user_elsewhere_is_never_held_back() {
        let mut t = throttle();
        let now = 1_000_000;
        // the real user logged in from B once
        let ticket = t.begin("alice", B, now).unwrap();
        t.finish("alice", B, ticket, Attempt::Succeeded, now);
        // A floods alice for 1000 minutes, long after B's trust has lapsed: one
        // source alone never trips the account-wide counter
        for i in 0..1_000 {
            let _ = fail(&mut t, "alice", A, now + i * 60_000);
        }
        // the last guess came at `later - 60 s` and holds A (and the account) back
        let later = now + 1_000 * 60_000 - 30_000;
        assert!(t.begin("alice", A, later).is_err());
        for i in 0..20 {
            let at = later + i;
            assert_eq!(succeed(&mut t, "alice", B, at), Ok(()), "attempt {i}");
        }
        // a mistyped password from B is counted against B on alice only
        assert_eq!(fail(&mut t, "alice", B, later), Ok(()));
        assert_eq!(succeed(&mut t, "alice", B, later), Ok(()));
    }

    #[test]
    fn many_sources_against_one_account_hold_back_untrusted_sources_only() {
        let mut t = throttle();
        let now = 5_000_000;
        let ticket = t.begin("alice", B, now).unwrap();
        t.finish("alice", B, ticket, Attempt::Succeeded, now);
        for i in 0..6u8 {
            let src = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, i)));
            assert_eq!(fail(&mut t, "alice", src, now), Ok(()));
        }
        let fresh = Some(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1)));
        assert!(
            t.begin("alice", fresh, now).is_err(),
            "account-wide backoff"
        );
        assert_eq!(
            succeed(&mut t, "alice", B, now),
            Ok(()),
            "a trusted source passes"
        );
        assert_eq!(
            succeed(&mut t, "bob", fresh, now),
            Ok(()),
            "other accounts are untouched"
        );
    }

    #[test]
    fn one_source_spraying_accounts_backs_off() {
        let mut t = throttle();
        let now = 1_000;
        for i in 0..10 {
            assert_eq!(fail(&mut t, &format!("user{i}"), A, now), Ok(()));
        }
        assert_eq!(fail(&mut t, "user99", A, now), Err(1_000));
        assert_eq!(fail(&mut t, "user99", B, now), Ok(()));
    }

    #[test]
    fn success_and_untried_attempts_are_taken_back_and_counters_forgotten() {
        let mut t = throttle();
        let now = 1_000;
        for _ in 0..2 {
            assert_eq!(fail(&mut t, "alice", A, now), Ok(()));
        }
        // a hashing pool refusal does not count
        for _ in 0..5 {
            let ticket = t.begin("alice", A, now).unwrap();
            t.finish("alice", A, ticket, Attempt::NotTried, now);
        }
        assert_eq!(fail(&mut t, "alice", A, now), Ok(()));
        assert!(t.begin("alice", A, now).is_err());
        // a success clears the pair
        let ticket = t.begin("bob", A, now).unwrap();
        t.finish("bob", A, ticket, Attempt::Succeeded, now);
        let after = now + 1_000;
        let ticket = t.begin("alice", A, after).unwrap();
        t.finish("alice", A, ticket, Attempt::Succeeded, after);
        assert_eq!(fail(&mut t, "alice", A, after), Ok(()));
        // long quiet: forgotten
        let much_later = after + 601_000;
        for _ in 0..3 {
            assert_eq!(fail(&mut t, "carol", B, much_later), Ok(()));
        }
        let quiet = much_later + 700_000;
        for _ in 0..3 {
            assert_eq!(fail(&mut t, "carol", B, quiet), Ok(()));
        }
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = LoginThrottle::new(ThrottleConfig {
            max_entries: 50,
            ..ThrottleConfig::default()
        });
        for i in 0..10_000u32 {
            let src = Some(IpAddr::V4(std::net::Ipv4Addr::from(i)));
            let _ = fail(&mut t, &format!("u{i}"), src, u64::from(i));
            assert!(t.len() <= 50);
        }
        assert!(ThrottleConfig::default().validate().is_ok());
        assert!(ThrottleConfig {
            max_entries: 0,
            ..ThrottleConfig::default()
        }
        .validate()
        .is_err());
    }
}
