//! Failed authentication throttled per peer address (agent tokens, push
//! credentials, drain passwords): a token bucket per
//! address that each bad credential drains. An address whose bucket is empty
//! is refused without its token being compared, so a brute force from one
//! address tries at most [`AUTH_FAILURE_BURST`] tokens and then one per
//! [`AUTH_FAILURE_REFILL`], while agents from other addresses are not
//! slowed at all. Failures are logged at warn at most once per
//! [`AUTH_LOG_INTERVAL`], with the count of those not logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Bad tokens an address may send before it is throttled.
pub(crate) const AUTH_FAILURE_BURST: f64 = 10.0;
/// Time in which a throttled address regains one attempt.
pub(crate) const AUTH_FAILURE_REFILL: Duration = Duration::from_secs(1);
/// Addresses tracked at most; past it, addresses that have regained all
/// their attempts are forgotten first, then the longest quiet.
pub(crate) const MAX_TRACKED_ADDRESSES: usize = 4096;
/// Authentication failures are logged at warn at most this often.
pub(crate) const AUTH_LOG_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    attempts: f64,
    updated: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant) -> Bucket {
        let regained =
            now.duration_since(self.updated).as_secs_f64() / AUTH_FAILURE_REFILL.as_secs_f64();
        Bucket {
            attempts: (self.attempts + regained).min(AUTH_FAILURE_BURST),
            updated: now,
        }
    }
}

#[derive(Debug, Default)]
struct Log {
    last: Option<Instant>,
    suppressed: u64,
}

/// One throttle: of the agent listener, or of a route that checks credentials.
#[derive(Debug, Default)]
pub(crate) struct AuthThrottle {
    /// Short sections (a lookup and an insert), never across an await.
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    log: Mutex<Log>,
}

impl AuthThrottle {
    /// Whether `peer` may have a token compared now.
    pub(crate) fn allows(&self, peer: IpAddr, now: Instant) -> bool {
        self.buckets
            .lock()
            .get(&peer)
            .is_none_or(|bucket| bucket.refilled(now).attempts >= 1.0)
    }

    /// `peer` sent a bad token.
    pub(crate) fn failed(&self, peer: IpAddr, now: Instant) {
        let mut buckets = self.buckets.lock();
        if !buckets.contains_key(&peer) && buckets.len() >= MAX_TRACKED_ADDRESSES {
            buckets.retain(|_, bucket| bucket.refilled(now).attempts < AUTH_FAILURE_BURST);
            if buckets.len() >= MAX_TRACKED_ADDRESSES
                && let Some(quietest) = buckets
                    .iter()
                    .min_by_key(|(_, bucket)| bucket.updated)
                    .map(|(address, _)| *address)
            {
                buckets.remove(&quietest);
            }
        }
        let bucket = buckets.entry(peer).or_insert(Bucket {
            attempts: AUTH_FAILURE_BURST,
            updated: now,
        });
        let mut refilled = bucket.refilled(now);
        refilled.attempts = (refilled.attempts - 1.0).max(0.0);
        *bucket = refilled;
    }

    /// Whether to log a failure at warn now; if so, how many were not
    /// logged since the last one.
    pub(crate) fn should_log(&self, now: Instant) -> Option<u64> {
        let mut log = self.log.lock();
        if log
            .last
            .is_some_and(|last| now.duration_since(last) < AUTH_LOG_INTERVAL)
        {
            log.suppressed += 1;
            return None;
        }
        log.last = Some(now);
        Some(std::mem::take(&mut log.suppressed))
    }

    /// Addresses tracked now.
    #[cfg(test)]
    fn n_tracked(&self) -> usize {
        self.buckets.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn an_address_is_throttled_after_its_burst_and_regains_attempts_over_time() {
        let throttle = AuthThrottle::default();
        let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
        let agent = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let start = Instant::now();
        for _ in 0..10 {
            assert!(throttle.allows(attacker, start));
            throttle.failed(attacker, start);
        }
        assert!(!throttle.allows(attacker, start), "the burst is spent");
        assert!(
            throttle.allows(agent, start),
            "other addresses are not slowed"
        );
        let later = start + AUTH_FAILURE_REFILL;
        assert!(throttle.allows(attacker, later), "one attempt regained");
        throttle.failed(attacker, later);
        assert!(!throttle.allows(attacker, later));
    }

    #[test]
    fn tracked_addresses_are_bounded() {
        let throttle = AuthThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 100) {
            throttle.failed(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), now);
        }
        assert!(throttle.n_tracked() <= MAX_TRACKED_ADDRESSES);
    }

    #[test]
    fn failures_are_logged_at_most_once_per_interval() {
        let throttle = AuthThrottle::default();
        let now = Instant::now();
        assert_eq!(throttle.should_log(now), Some(0));
        assert_eq!(throttle.should_log(now), None);
        assert_eq!(throttle.should_log(now), None);
        assert_eq!(throttle.should_log(now + AUTH_LOG_INTERVAL), Some(2));
    }
}
