//! The account pool (the original example's `SIPAccountPool`): the PBX accounts sipline
//! may use, leased one per browser connection.
//!
//! A [`Lease`] is the only way to hold an account, and dropping it returns the account,
//! so an account can never be leased twice at once and no lease outlives the session
//! task that owns it, whatever way that task ends.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use sipline_sip::Account;

#[derive(Debug)]
pub struct AccountPool {
    accounts: Vec<Account>,
    free: Mutex<BTreeSet<usize>>,
}

impl AccountPool {
    pub fn new(accounts: Vec<Account>) -> Arc<AccountPool> {
        let free = (0..accounts.len()).collect();
        Arc::new(AccountPool {
            accounts,
            free: Mutex::new(free),
        })
    }

    fn free(&self) -> MutexGuard<'_, BTreeSet<usize>> {
        // a panic while holding this lock cannot leave the set inconsistent
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leases a free account (the first in configuration order), if any.
    pub fn lease(self: &Arc<Self>) -> Option<Lease> {
        let index = self.free().pop_first()?;
        Some(Lease {
            pool: Arc::clone(self),
            index,
        })
    }

    pub fn size(&self) -> usize {
        self.accounts.len()
    }

    pub fn leased(&self) -> usize {
        self.accounts.len() - self.free().len()
    }
}

/// Exclusive use of one account until dropped.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<AccountPool>,
    index: usize,
}

impl Lease {
    pub fn account(&self) -> &Account {
        &self.pool.accounts[self.index]
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.free().insert(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let p = pool(19);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let p = Arc::clone(&p);
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        if let Some(l) = p.lease() {
                            let user = l.account().user.clone();
                            assert!(user.starts_with("8"));
                            drop(l);
                        }
                    }
                })
            })
            .collect();
        let held: Vec<Lease> = std::iter::from_fn(|| p.lease()).take(5).collect();
        for h in handles {
            h.join().unwrap();
        }
        let mut users: Vec<_> = held.iter().map(|l| l.account().user.clone()).collect();
        users.dedup();
        assert_eq!(users.len(), 5);
        drop(held);
        assert_eq!(p.leased(), 0);
    }
}
