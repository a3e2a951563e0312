//! Source pulls: Docker Hub counts manifest GETs (HEADs and blob GETs are
//! free), so a fleet run counts them per source host, stops at
//! `max_source_pulls` and at the `ratelimit-remaining` the host reports, and
//! defers the images left instead of failing them.
//!
//! Images reserve pulls before they spend them (see `counted.rs`); once one
//! reservation is refused the host's budget is closed, so every later image
//! from it is deferred without spending anything.

use std::sync::{Arc, Mutex};

use mirror_registry::{RateLimit, Repository};
use serde::Serialize;

/// The pull budget of one source host.
pub struct SourceBudget {
    host: String,
    limit: Option<u64>,
    /// Any repository on the host: its answers carry the rate-limit headers.
    probe: Option<Repository>,
    state: Mutex<State>,
    /// Held by one image from its first GET until its index's children are
    /// reserved: images are admitted one after another, so two of them
    /// never both spend a root GET on pulls only one can afford.
    admission: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Default)]
struct State {
    /// GETs answered.
    spent: u64,
    /// Reserved and not yet answered (sent or not).
    outstanding: u64,
    /// A reservation was refused: every later one is too.
    closed: bool,
}

/// What a host's budget did in a run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PullsSpent {
    pub host: String,
    /// Manifest GETs sent to the host.
    pub spent: u64,
    pub limit: Option<u64>,
    /// The host's own count, from its last answer that carried one.
    pub rate_limit: Option<RateLimit>,
    /// Whether images were deferred because the budget or quota ran out.
    pub exhausted: bool,
}

impl SourceBudget {
    pub fn new(host: &str, limit: Option<u64>, probe: Option<Repository>) -> Arc<Self> {
        Arc::new(Self {
            host: host.to_owned(),
            limit,
            probe,
            state: Mutex::new(State::default()),
            admission: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Whether anything bounds the pulls: a cap, or a count the host reports.
    pub fn is_bounded(&self) -> bool {
        self.limit.is_some() || self.remaining_quota().is_some()
    }

    /// Waits for this image's turn to reserve (see the `admission` field).
    pub async fn admit(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.admission.clone().lock_owned().await
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remaining_quota(&self) -> Option<u64> {
        self.probe
            .as_ref()
            .and_then(Repository::rate_limit)
            .map(|r| r.remaining)
    }

    /// Takes `count` pulls for `self`'s budget if both the cap and the host's
    /// remaining quota allow it; a refusal closes the budget.
    fn take(&self, count: u64) -> bool {
        let quota = self.remaining_quota();
        let mut state = self.state();
        if state.closed {
            return false;
        }
        let by_limit = self
            .limit
            .is_none_or(|limit| state.spent + state.outstanding + count <= limit);
        let by_quota = quota.is_none_or(|remaining| state.outstanding + count <= remaining);
        if by_limit && by_quota {
            state.outstanding += count;
            true
        } else {
            state.closed = true;
            false
        }
    }

    /// Reserves `count` pulls, or `None` (and the budget is closed).
    pub fn reserve(self: &Arc<Self>, count: u64) -> Option<Reservation> {
        self.take(count).then(|| Reservation {
            budget: self.clone(),
            left: count,
        })
    }

    /// A GET drawn from a reservation was answered.
    pub fn spent_one(&self) {
        let mut state = self.state();
        state.outstanding = state.outstanding.saturating_sub(1);
        state.spent += 1;
    }

    /// Whether reservations are refused now.
    pub fn is_closed(&self) -> bool {
        self.state().closed
    }

    pub fn report(&self) -> PullsSpent {
        let state = self.state();
        PullsSpent {
            host: self.host.clone(),
            spent: state.spent,
            limit: self.limit,
            rate_limit: self.probe.as_ref().and_then(Repository::rate_limit),
            exhausted: state.closed,
        }
    }
}

/// Pulls set aside for one image; what is not drawn goes back when dropped.
pub struct Reservation {
    budget: Arc<SourceBudget>,
    left: u64,
}

impl Reservation {
    /// Takes one reserved pull for a GET about to be sent.
    pub fn draw(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        true
    }

    /// Reserves `count` more, or fails (and the budget is closed).
    pub fn grow(&mut self, count: u64) -> bool {
        if count == 0 {
            return true;
        }
        let taken = self.budget.take(count);
        if taken {
            self.left += count;
        }
        taken
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut state = self.budget.state();
        state.outstanding = state.outstanding.saturating_sub(self.left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_reservation_closes_the_budget_and_returns_nothing_spent() {
        let budget = SourceBudget::new("registry-1.docker.io", Some(5), None);
        let mut first = budget.reserve(1).expect("1 of 5");
        assert!(first.draw());
        budget.spent_one();
        assert!(first.grow(3), "4 of 5");
        assert!(first.draw());
        budget.spent_one();
        drop(first); // two reserved children were never fetched
        assert_eq!(budget.report().spent, 2);
        let mut second = budget.reserve(1).expect("3 of 5");
        assert!(second.draw());
        budget.spent_one();
        assert!(!second.grow(3), "6 of 5");
        assert!(budget.is_closed());
        assert!(budget.reserve(1).is_none(), "closed for good");
        let report = budget.report();
        assert_eq!((report.spent, report.exhausted), (3, true));
    }

    #[test]
    fn without_a_limit_or_quota_everything_passes() {
        let budget = SourceBudget::new("example.com", None, None);
        let mut reservation = budget.reserve(1000).expect("no limit");
        assert!(reservation.grow(1_000_000));
        assert!(!budget.is_closed());
    }
}
