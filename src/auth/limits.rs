//! Login rate limits that slow an attacker without locking the account's owner out.
//!
//! - **Per client address**, every attempt (GCRA, via governor): one address spraying many accounts
//!   is slowed.
//! - **Per account and address**, failures only: after `free_failures` failures in a row, each
//!   further failure doubles the wait before the next attempt (1 s, 2 s, 4 s, … up to 15 min). A
//!   success clears it. Someone guessing from one address slows only themselves.
//! - **Per account, from addresses it never signed in from**, failures only, with four times the
//!   free failures and a back-off starting at 8 s: many addresses guessing one account are slowed
//!   together. An address the account
//!   has signed in from before (a *known* address) is exempt, so its owner still gets in while the
//!   account is under attack from elsewhere.
//!
//! Failure counts decay: a pair with no failure for [`FORGET_AFTER`] starts again from zero.
//! Everything is in memory, per node.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::AppError;

/// The longest a back-off grows.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// Failures older than this are forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// How many more failures an account takes from unknown addresses than from one address.
const ACCOUNT_FACTOR: u32 = 4;
/// An account that many addresses guess at is under attack: its back-off starts at 8 s.
const ACCOUNT_SHIFT: u32 = 3;

#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    last_failure: Instant,
    blocked_until: Instant,
}

impl Backoff {
    /// The wait left, if any.
    fn wait(&self, now: Instant) -> Option<Duration> {
        (self.blocked_until > now).then(|| self.blocked_until - now)
    }

    /// One more failure; beyond `free`, the wait is `backoff(over + shift)`.
    fn fail(entry: Option<Backoff>, free: u32, shift: u32, now: Instant) -> Backoff {
        let failures = match entry {
            Some(b) if now.duration_since(b.last_failure) < FORGET_AFTER => b.failures.saturating_add(1),
            _ => 1,
        };
        let blocked_until = match failures.checked_sub(free) {
            None => now,
            Some(over) => now + backoff(over.saturating_add(shift)),
        };
        Backoff { failures, last_failure: now, blocked_until }
    }
}

/// The wait after `over` failures beyond the free ones: 1 s doubling, capped.
fn backoff(over: u32) -> Duration {
    let secs = 1u64.checked_shl(over).unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

pub struct LoginLimiter {
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    per_pair: DashMap<(String, Option<IpAddr>), Backoff>,
    per_account: DashMap<String, Backoff>,
    free_failures: u32,
    clock: DefaultClock,
}

fn limited(wait: Duration) -> AppError {
    metrics::counter!("portcullis_login_rate_limited_total").increment(1);
    // Round up: a client that waits Retry-After seconds must not be refused again.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    AppError::RateLimited { retry_after_secs: secs.max(1) }
}

impl LoginLimiter {
    /// `free_failures`: failures per account and address before the back-off starts;
    /// `per_address`: attempts per minute from one address (bursts up to the same number).
    pub fn new(free_failures: NonZeroU32, per_address: NonZeroU32) -> Self {
        LoginLimiter {
            per_address: RateLimiter::keyed(Quota::per_minute(per_address)),
            per_pair: DashMap::new(),
            per_account: DashMap::new(),
            free_failures: free_failures.get(),
            clock: DefaultClock::default(),
        }
    }

    /// Before the account is looked up: counts one attempt from `address`, and refuses while the
    /// pair (account, address) is backing off. `account` must be normalized.
    pub fn check(&self, account: &str, address: Option<IpAddr>) -> Result<(), AppError> {
        if let Some(address) = address {
            self.per_address
                .check_key(&address)
                .map_err(|not_until| limited(not_until.wait_time_from(self.clock.now())))?;
        }
        let now = Instant::now();
        if let Some(wait) = self.per_pair.get(&(account.to_owned(), address)).and_then(|b| b.wait(now)) {
            return Err(limited(wait));
        }
        Ok(())
    }

    /// Once the account is known: an address it never signed in from also waits while the
    /// account as a whole is backing off.
    pub fn check_account(&self, account: &str, known_address: bool) -> Result<(), AppError> {
        if known_address {
            return Ok(());
        }
        match self.per_account.get(account).and_then(|b| b.wait(Instant::now())) {
            Some(wait) => Err(limited(wait)),
            None => Ok(()),
        }
    }

    /// A wrong password (or unknown account) from `address`.
    pub fn failed(&self, account: &str, address: Option<IpAddr>, known_address: bool) {
        let now = Instant::now();
        let key = (account.to_owned(), address);
        let next = Backoff::fail(self.per_pair.get(&key).map(|b| *b), self.free_failures, 0, now);
        self.per_pair.insert(key, next);
        if !known_address {
            let free = self.free_failures.saturating_mul(ACCOUNT_FACTOR);
            let next = Backoff::fail(self.per_account.get(account).map(|b| *b), free, ACCOUNT_SHIFT, now);
            self.per_account.insert(account.to_owned(), next);
        }
    }

    /// A successful sign-in clears the pair's failures.
    pub fn succeeded(&self, account: &str, address: Option<IpAddr>) {
        self.per_pair.remove(&(account.to_owned(), address));
    }

    /// Forgets what no longer limits anyone (bounded memory).
    pub fn retain_recent(&self) {
        self.per_address.retain_recent();
        let now = Instant::now();
        let keep = |b: &Backoff| b.blocked_until > now || now.duration_since(b.last_failure) < FORGET_AFTER;
        self.per_pair.retain(|_, b| keep(b));
        self.per_account.retain(|_, b| keep(b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> LoginLimiter {
        LoginLimiter::new(NonZeroU32::MIN.saturating_add(2), NonZeroU32::MAX)
    }

    #[test]
    fn the_back_off_doubles_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(20), MAX_BACKOFF);
        assert_eq!(backoff(200), MAX_BACKOFF);
    }

    #[test]
    fn failures_from_one_address_do_not_slow_another() {
        let l = limiter();
        let (attacker, owner) = (Some(IpAddr::from([10, 0, 0, 1])), Some(IpAddr::from([10, 0, 0, 2])));
        for _ in 0..3 {
            assert!(l.check("a@x", attacker).is_ok());
            l.failed("a@x", attacker, false);
        }
        assert!(matches!(l.check("a@x", attacker), Err(AppError::RateLimited { .. })));
        assert!(l.check("a@x", owner).is_ok());
        assert!(l.check_account("a@x", false).is_ok(), "3 failures are within the account's budget");
    }

    #[test]
    fn a_known_address_is_exempt_from_the_account_wide_back_off() {
        let l = limiter();
        for i in 0..12u8 {
            l.failed("a@x", Some(IpAddr::from([10, 0, 1, i])), false);
        }
        assert!(matches!(l.check_account("a@x", false), Err(AppError::RateLimited { .. })));
        assert!(l.check_account("a@x", true).is_ok());
    }

    #[test]
    fn success_clears_the_pair() {
        let l = limiter();
        let addr = Some(IpAddr::from([10, 0, 0, 3]));
        for _ in 0..3 {
            l.failed("a@x", addr, true);
        }
        assert!(l.check("a@x", addr).is_err());
        l.succeeded("a@x", addr);
        assert!(l.check("a@x", addr).is_ok());
    }
}
