//! The account pool (the original example's `SIPAccountPool`): the PBX accounts sipline
//! may use, leased one per browser connection.
//!
//! A [`Lease`] is the only way to hold an account, and dropping it returns the account,
//! so an account can never be leased twice at once and no lease outlives the session
//! task that owns it, whatever way that task ends.
//!
//! An account comes back only once its line has unregistered, so right after a browser
//! leaves (a page reload) its account is still on its way back. A lease marked
//! [`Lease::releasing`] tells newcomers one is coming: [`AccountPool::lease_or_wait`]
//! waits for it (bounded) instead of refusing at once. With every account held by a
//! live session it still waits [`SETTLE`], since a session whose browser just reset its
//! connection may not have noticed yet, then refuses.
//!
//! With `[cluster]` the leases live in Redis ([`crate::cluster`]), shared by every node:
//! this node then only counts its own, and a lease may be lost ([`Lease::lost`]) when it
//! can no longer be renewed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sipline_sip::Account;
use tokio::sync::{Notify, watch};

use crate::cluster::{ClaimError, Cluster, Fenced};

/// How long a newcomer waits when no account is even on its way back.
pub const SETTLE: Duration = Duration::from_secs(1);
/// How often a waiting newcomer asks Redis again (other nodes' releases are not signalled).
const CLUSTER_POLL: Duration = Duration::from_millis(250);

pub struct AccountPool {
    accounts: Vec<Account>,
    state: Mutex<State>,
    returned: Notify,
    cluster: Option<Cluster>,
}

impl std::fmt::Debug for AccountPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountPool")
            .field("accounts", &self.accounts.len())
            .field("cluster", &self.cluster.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    /// Accounts free here (the local pool only).
    free: BTreeSet<usize>,
    /// Accounts leased to this node's sessions.
    held: BTreeSet<usize>,
    /// Leases whose session ended and whose account is on its way back.
    releasing: usize,
}

/// Why no account was leased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Every account is in use: `connectionLimit`.
    Full,
    /// The shared pool cannot be used now (Redis unreachable, or settling after it lost
    /// its data): this says why, for the browser.
    Unavailable(&'static str),
}

impl AccountPool {
    /// The in-process pool.
    pub fn new(accounts: Vec<Account>) -> Arc<AccountPool> {
        Self::build(accounts, None)
    }

    /// The pool shared through Redis.
    pub fn clustered(accounts: Vec<Account>, cluster: Cluster) -> Arc<AccountPool> {
        Self::build(accounts, Some(cluster))
    }

    fn build(accounts: Vec<Account>, cluster: Option<Cluster>) -> Arc<AccountPool> {
        let free = (0..accounts.len()).collect();
        Arc::new(AccountPool {
            accounts,
            state: Mutex::new(State {
                free,
                held: BTreeSet::new(),
                releasing: 0,
            }),
            returned: Notify::new(),
            cluster,
        })
    }

    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // a panic while holding this lock cannot leave the state inconsistent
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leases a free account of the local pool (the first in configuration order), if any.
    pub fn lease(self: &Arc<Self>) -> Option<Lease> {
        if self.cluster.is_some() {
            return None;
        }
        let mut state = self.state();
        let index = state.free.pop_first()?;
        state.held.insert(index);
        drop(state);
        Some(Lease::new(self, index, false, None))
    }

    /// Leases a free account, or, when none is free but one is being released, waits
    /// for it up to `wait` (up to [`SETTLE`] when none is).
    pub async fn lease_or_wait(self: &Arc<Self>, wait: Duration) -> Result<Lease, Refusal> {
        let start = tokio::time::Instant::now();
        let deadline = start + wait;
        loop {
            // ask to be woken before looking, so a change in between is not missed
            let changed = self.returned.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let refusal = match self.try_lease().await {
                Ok(lease) => return Ok(lease),
                Err(refusal) => refusal,
            };
            let until = match refusal {
                Refusal::Full if self.state().releasing > 0 => deadline,
                Refusal::Full => deadline.min(start + SETTLE),
                Refusal::Unavailable(_) if self.is_settling() => deadline,
                Refusal::Unavailable(_) => return Err(refusal),
            };
            let now = tokio::time::Instant::now();
            if now >= until {
                return Err(refusal);
            }
            // the cluster pool is asked again now and then: other nodes' releases are not signalled
            let next = if self.cluster.is_some() {
                until.min(now + CLUSTER_POLL)
            } else {
                until
            };
            let _ = tokio::time::timeout_at(next, changed).await;
        }
    }

    fn is_settling(&self) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.stats.settling.load(std::sync::atomic::Ordering::Relaxed))
    }

    async fn try_lease(self: &Arc<Self>) -> Result<Lease, Refusal> {
        let Some(cluster) = &self.cluster else {
            return self.lease().ok_or(Refusal::Full);
        };
        match cluster.claim().await {
            Ok(claimed) => {
                self.state().held.insert(claimed.index);
                Ok(Lease::new(
                    self,
                    claimed.index,
                    claimed.takeover,
                    Some(claimed.lost),
                ))
            }
            Err(ClaimError::NoneFree) => Err(Refusal::Full),
            Err(ClaimError::Settling) => Err(Refusal::Unavailable(
                "the shared account pool is recovering: try again shortly",
            )),
            Err(ClaimError::Unavailable(why)) => {
                tracing::warn!(%why, "cluster: no lease");
                Err(Refusal::Unavailable(
                    "the shared account pool is unreachable: try again later",
                ))
            }
        }
    }

    pub fn size(&self) -> usize {
        self.accounts.len()
    }

    /// Accounts leased to this node's sessions.
    pub fn leased(&self) -> usize {
        self.state().held.len()
    }

    /// The user names of the accounts leased to this node's sessions.
    pub fn leased_users(&self) -> Vec<String> {
        let held = self.state().held.clone();
        held.into_iter().map(|i| self.accounts[i].user.clone()).collect()
    }

    /// Accounts on their way back (their session ended, their line is unregistering).
    pub fn releasing(&self) -> usize {
        self.state().releasing
    }

    /// Whether a newcomer could get an account now, as far as this node can tell.
    pub fn may_lease(&self) -> bool {
        match &self.cluster {
            None => self.leased() < self.size() || self.releasing() > 0,
            Some(c) => {
                use std::sync::atomic::Ordering::Relaxed;
                c.stats.redis_up.load(Relaxed) && !c.stats.settling.load(Relaxed)
            }
        }
    }
}

/// Exclusive use of one account until dropped.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<AccountPool>,
    index: usize,
    releasing: bool,
    /// The line was seen to unregister (so no binding of ours is left at the PBX).
    unregistered: bool,
    takeover: bool,
    lost: Option<watch::Receiver<Option<Fenced>>>,
}

impl Lease {
    fn new(
        pool: &Arc<AccountPool>,
        index: usize,
        takeover: bool,
        lost: Option<watch::Receiver<Option<Fenced>>>,
    ) -> Lease {
        Lease {
            pool: Arc::clone(pool),
            index,
            releasing: false,
            unregistered: false,
            takeover,
            lost,
        }
    }

    pub fn account(&self) -> &Account {
        &self.pool.accounts[self.index]
    }

    /// Its last holder (a node that died) did not unregister it: its binding at the PBX
    /// must be removed before ours is added.
    pub fn is_takeover(&self) -> bool {
        self.takeover
    }

    /// What tells the session its lease is given up (never, for the local pool).
    pub fn lost(&self) -> LeaseLost {
        LeaseLost(self.lost.clone())
    }

    /// The line has unregistered (confirmed by the PBX or by the SIP task).
    pub fn unregistered(&mut self) {
        self.unregistered = true;
    }

    /// Whether the lease was given up already (a shared pool that could not renew it).
    pub fn is_lost(&self) -> bool {
        self.lost.as_ref().is_some_and(|rx| rx.borrow().is_some())
    }

    /// Its session is over: the account comes back once the line has unregistered.
    /// Newcomers may wait for it.
    pub fn releasing(&mut self) {
        if !std::mem::replace(&mut self.releasing, true) {
            self.pool.state().releasing += 1;
            self.pool.returned.notify_waiters();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = self.pool.state();
        state.held.remove(&self.index);
        if self.releasing {
            state.releasing -= 1;
        }
        match &self.pool.cluster {
            None => {
                state.free.insert(self.index);
            }
            Some(cluster) => cluster.release(self.index, self.unregistered),
        }
        drop(state);
        self.pool.returned.notify_waiters();
    }
}

/// Resolves when a lease is given up (Redis could not confirm it in time, or another
/// node holds it): the session must stop using the account at once.
pub struct LeaseLost(Option<watch::Receiver<Option<Fenced>>>);

impl LeaseLost {
    /// Resolves when the lease is given up (never for the local pool). Meant for while
    /// the lease is held: a driver gone meanwhile means nothing renews it any more.
    pub async fn wait(&mut self) -> Fenced {
        let Some(rx) = &mut self.0 else {
            return std::future::pending().await;
        };
        match rx.wait_for(Option::is_some).await {
            Ok(why) => why.unwrap_or(Fenced::Lost),
            Err(_) => Fenced::Expiring,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn pool(n: usize) -> Arc<AccountPool> {
        AccountPool::new(
            (0..n)
                .map(|i| Account {
                    user: format!("{}", 880 + i),
                    auth_user: String::new(),
                    password: String::new(),
                    display_name: None,
                    domain: "d".into(),
                })
                .collect(),
        )
    }

    #[test]
    fn leases_each_account_once_and_returns_it_on_drop() {
        let p = pool(2);
        let a = p.lease().unwrap();
        let b = p.lease().unwrap();
        assert_ne!(a.account().user, b.account().user);
        assert!(p.lease().is_none(), "connection limit");
        assert_eq!(p.leased(), 2);
        drop(a);
        assert_eq!(p.lease().unwrap().account().user, "880");
        drop(b);
        assert_eq!(p.leased(), 0);
    }

    #[test]
    fn concurrent_leases_never_share_an_account() {
        let p = pool(5);
        // every account held right now, by whom: a second holder would find it taken
        let held: Arc<Mutex<HashSet<String>>> = Arc::default();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (p, held) = (Arc::clone(&p), Arc::clone(&held));
                std::thread::spawn(move || {
                    let mut leased = 0;
                    for _ in 0..5000 {
                        if let Some(l) = p.lease() {
                            let user = l.account().user.clone();
                            assert!(held.lock().unwrap().insert(user.clone()), "{user} leased twice");
                            std::thread::yield_now();
                            assert!(held.lock().unwrap().remove(&user));
                            drop(l);
                            leased += 1;
                        }
                    }
                    leased
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(total > 5000, "the threads did contend: {total} leases");
        assert_eq!(p.leased(), 0);
    }

    #[tokio::test]
    async fn a_newcomer_waits_for_an_account_on_its_way_back() {
        let p = pool(1);
        let mut old = p.lease().unwrap();
        old.releasing();
        let waiter = {
            let p = Arc::clone(&p);
            tokio::spawn(async move { p.lease_or_wait(Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "it waits");
        drop(old); // the line unregistered
        let lease = waiter.await.unwrap().expect("the returned account");
        assert_eq!(lease.account().user, "880");
        assert_eq!(p.releasing(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_account_in_use_a_newcomer_is_refused_after_a_moment() {
        let p = pool(1);
        let _held = p.lease().unwrap();
        let t0 = tokio::time::Instant::now();
        assert!(p.lease_or_wait(Duration::from_secs(5)).await.is_err());
        assert_eq!(
            t0.elapsed(),
            SETTLE,
            "not the whole wait when nothing is coming back"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_that_notices_its_end_late_still_hands_its_account_over() {
        let p = pool(1);
        let mut old = p.lease().unwrap();
        let waiter = {
            let p = Arc::clone(&p);
            tokio::spawn(async move { p.lease_or_wait(Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        old.releasing(); // the reset is noticed: the waiter now waits for the account
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(old);
        assert!(waiter.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_bounded() {
        let p = pool(1);
        let mut stuck = p.lease().unwrap();
        stuck.releasing();
        assert!(p.lease_or_wait(Duration::from_secs(3)).await.is_err());
        drop(stuck);
        assert!(p.lease_or_wait(Duration::from_secs(3)).await.is_ok());
    }
}
