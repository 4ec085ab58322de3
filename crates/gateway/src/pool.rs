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

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sipline_sip::Account;
use tokio::sync::Notify;

/// How long a newcomer waits when no account is even on its way back.
pub const SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct AccountPool {
    accounts: Vec<Account>,
    state: Mutex<State>,
    returned: Notify,
}

#[derive(Debug)]
struct State {
    free: BTreeSet<usize>,
    /// Leases whose session ended and whose account is on its way back.
    releasing: usize,
}

impl AccountPool {
    pub fn new(accounts: Vec<Account>) -> Arc<AccountPool> {
        let free = (0..accounts.len()).collect();
        Arc::new(AccountPool {
            accounts,
            state: Mutex::new(State { free, releasing: 0 }),
            returned: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // a panic while holding this lock cannot leave the state inconsistent
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leases a free account (the first in configuration order), if any.
    pub fn lease(self: &Arc<Self>) -> Option<Lease> {
        let index = self.state().free.pop_first()?;
        Some(Lease {
            pool: Arc::clone(self),
            index,
            releasing: false,
        })
    }

    /// Leases a free account, or, when none is free but one is being released, waits
    /// for it up to `wait` (up to [`SETTLE`] when none is). None: no account came free.
    pub async fn lease_or_wait(self: &Arc<Self>, wait: Duration) -> Option<Lease> {
        let start = tokio::time::Instant::now();
        let deadline = start + wait;
        loop {
            // ask to be woken before looking, so a change in between is not missed
            let changed = self.returned.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(lease) = self.lease() {
                return Some(lease);
            }
            let until = if self.state().releasing > 0 {
                deadline
            } else {
                deadline.min(start + SETTLE)
            };
            if tokio::time::timeout_at(until, changed).await.is_err() {
                return self.lease();
            }
        }
    }

    pub fn size(&self) -> usize {
        self.accounts.len()
    }

    pub fn leased(&self) -> usize {
        self.accounts.len() - self.state().free.len()
    }

    /// Accounts on their way back (their session ended, their line is unregistering).
    pub fn releasing(&self) -> usize {
        self.state().releasing
    }
}

/// Exclusive use of one account until dropped.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<AccountPool>,
    index: usize,
    releasing: bool,
}

impl Lease {
    pub fn account(&self) -> &Account {
        &self.pool.accounts[self.index]
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
        state.free.insert(self.index);
        if self.releasing {
            state.releasing -= 1;
        }
        drop(state);
        self.pool.returned.notify_waiters();
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
        assert!(p.lease_or_wait(Duration::from_secs(5)).await.is_none());
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
        assert!(waiter.await.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_bounded() {
        let p = pool(1);
        let mut stuck = p.lease().unwrap();
        stuck.releasing();
        assert!(p.lease_or_wait(Duration::from_secs(3)).await.is_none());
        drop(stuck);
        assert!(p.lease_or_wait(Duration::from_secs(3)).await.is_some());
    }
}
