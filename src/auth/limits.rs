//! Login rate limits, per account and per client address (GCRA, via governor). Both are checked
//! before the password is, so guessing is slowed whether it targets one account from many
//! addresses or many accounts from one.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

pub struct LoginLimiter {
    per_account: DefaultKeyedRateLimiter<String>,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl LoginLimiter {
    /// Limits are attempts per minute (bursts up to the same number).
    pub fn new(per_account: NonZeroU32, per_address: NonZeroU32) -> Self {
        LoginLimiter {
            per_account: RateLimiter::keyed(Quota::per_minute(per_account)),
            per_address: RateLimiter::keyed(Quota::per_minute(per_address)),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one attempt; 429 with the time to wait when either limit is reached.
    pub fn check(&self, email: &str, address: Option<IpAddr>) -> Result<(), ApiError> {
        let limited = |not_until: governor::NotUntil<_>| {
            let wait = not_until.wait_time_from(self.clock.now());
            metrics::counter!("portcullis_login_rate_limited_total").increment(1);
            ApiError::RateLimited { retry_after_secs: wait.as_secs().max(1) }
        };
        if let Some(address) = address {
            self.per_address.check_key(&address).map_err(limited)?;
        }
        self.per_account.check_key(&email.to_owned()).map_err(limited)
    }

    /// Forgets keys whose limits have fully recovered (bounded memory).
    pub fn retain_recent(&self) {
        self.per_account.retain_recent();
        self.per_address.retain_recent();
    }
}
