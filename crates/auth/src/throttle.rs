//! Slowing down password and secret guessing at the token endpoint.
//!
//! Every failed token request is counted under the keys it touched: the account (the client,
//! or the client and username of a password grant) and the source address. Once a key has had
//! [`ThrottlePolicy::free_failures`] failures, each further attempt must wait an increasing
//! delay after the last failure (`base_delay`, doubled per failure, at most `max_delay`); an
//! attempt that comes earlier is refused with `429` before anything is verified, so it costs
//! neither an argon2 hash nor a count. The delay is bounded, so no attacker can lock a real
//! user out for longer than `max_delay` past their own last guess, and a count is forgotten
//! `window` after its last failure. A success clears the account's count; it does not clear
//! the address's, or one valid account would let its owner guess others' passwords freely.
//!
//! The counts live in the identity store, so every process of the split deployment sees the
//! same ones.

use std::sync::Arc;
use std::time::Duration;

use crate::identities::{millis, now_ms};
use crate::store::{FailureRecord, IdentityStore, StoreError};

/// How failures under one kind of key are throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures allowed without any delay (typos).
    pub free_failures: u32,
    /// The delay after the first failure past the free ones; doubled by each further failure.
    pub base_delay: Duration,
    /// The longest delay: the bound on what an attacker can inflict on a real user.
    pub max_delay: Duration,
    /// How long a count is remembered after its last failure.
    pub window: Duration,
}

impl ThrottlePolicy {
    /// How long after `record` the next attempt must wait, at `now_ms`; `None` when it may go.
    fn wait(&self, record: &FailureRecord, now_ms: i64) -> Option<Duration> {
        let since = now_ms.saturating_sub(record.last_failure_ms);
        if since >= millis(self.window) || record.failures < self.free_failures {
            return None;
        }
        let doublings = (record.failures - self.free_failures).min(20);
        let delay = self.base_delay.saturating_mul(1 << doublings).min(self.max_delay);
        let left = millis(delay).saturating_sub(since);
        (left > 0).then(|| Duration::from_millis(u64::try_from(left).unwrap_or_default()))
    }
}

/// The policies of the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Per client, and per (client, username) of a password grant.
    pub account: ThrottlePolicy,
    /// Per source address: more free failures, since many people may share one (a NAT).
    pub address: ThrottlePolicy,
}

impl Default for ThrottleConfig {
    /// 5 free failures per account and 20 per address, then 1 s, 2 s, 4 s … up to a minute;
    /// counts forgotten 15 minutes after the last failure.
    fn default() -> Self {
        let account = ThrottlePolicy {
            free_failures: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            window: Duration::from_secs(15 * 60),
        };
        Self { account, address: ThrottlePolicy { free_failures: 20, ..account } }
    }
}

/// A key failures are counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ThrottleKey {
    /// A client, or a (client, username) pair; usernames in lower case, as lookups ignore case.
    Account(String),
    /// A source address.
    Address(String),
}

impl ThrottleKey {
    /// The account of a client_credentials grant.
    pub(crate) fn client(client_id: &str) -> Self {
        Self::Account(format!("client:{client_id}"))
    }

    /// The account of a password grant: the username, through the client if one came along.
    pub(crate) fn user(client_id: Option<&str>, username: &str) -> Self {
        Self::Account(format!("user:{}:{}", client_id.unwrap_or("-"), username.to_ascii_lowercase()))
    }

    fn text(&self) -> String {
        match self {
            Self::Account(key) => key.clone(),
            Self::Address(ip) => format!("addr:{ip}"),
        }
    }
}

/// Counts failures and answers whether an attempt may go ahead.
#[derive(Clone)]
pub(crate) struct Throttle {
    store: Arc<dyn IdentityStore>,
    config: ThrottleConfig,
}

impl Throttle {
    pub(crate) fn new(store: Arc<dyn IdentityStore>, config: ThrottleConfig) -> Self {
        Self { store, config }
    }

    fn policy(&self, key: &ThrottleKey) -> &ThrottlePolicy {
        match key {
            ThrottleKey::Account(_) => &self.config.account,
            ThrottleKey::Address(_) => &self.config.address,
        }
    }

    /// How long the attempt must wait, if any of its keys is throttled.
    pub(crate) async fn wait(&self, keys: &[ThrottleKey]) -> Result<Option<Duration>, StoreError> {
        let now = now_ms();
        let mut longest = None;
        for key in keys {
            if let Some(record) = self.store.failures(&key.text()).await? {
                longest = longest.max(self.policy(key).wait(&record, now));
            }
        }
        Ok(longest)
    }

    /// Counts a failure under every key.
    pub(crate) async fn failed(&self, keys: &[ThrottleKey]) -> Result<(), StoreError> {
        let now = now_ms();
        for key in keys {
            let forget_before = now.saturating_sub(millis(self.policy(key).window));
            self.store.record_failure(&key.text(), now, forget_before).await?;
        }
        Ok(())
    }

    /// Forgets the failures of the accounts among `keys` (not of the address).
    pub(crate) async fn succeeded(&self, keys: &[ThrottleKey]) -> Result<(), StoreError> {
        for key in keys.iter().filter(|k| matches!(k, ThrottleKey::Account(_))) {
            self.store.clear_failures(&key.text()).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            free_failures: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            window: Duration::from_secs(600),
        }
    }

    fn after(failures: u32, last_failure_ms: i64) -> FailureRecord {
        FailureRecord { failures, last_failure_ms }
    }

    #[test]
    fn the_free_failures_cost_no_delay() {
        assert_eq!(policy().wait(&after(2, 1_000), 1_000), None);
    }

    #[test]
    fn past_the_free_failures_the_delay_doubles_up_to_the_bound() {
        let waits: Vec<_> = (3..=8).map(|n| policy().wait(&after(n, 10_000), 10_000)).collect();
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(waits, [secs(1), secs(2), secs(4), secs(8), secs(8), secs(8)]);
    }

    #[test]
    fn the_delay_counts_from_the_last_failure_and_then_lets_the_next_attempt_through() {
        assert_eq!(policy().wait(&after(4, 10_000), 11_500), Some(Duration::from_millis(500)));
        assert_eq!(policy().wait(&after(4, 10_000), 12_000), None);
    }

    #[test]
    fn a_count_older_than_the_window_is_forgotten() {
        assert_eq!(policy().wait(&after(1_000, 0), 600_000), None);
    }
}
