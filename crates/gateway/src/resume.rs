//! Resume tokens: a browser whose WebSocket went away without a close (a network change,
//! a lid closed, a proxy restarted) gets its session (lease, line, call) back by
//! connecting to `/api/v1/ws?resume=TOKEN` within `http.resume_window`.
//!
//! A token is 256 bits from the operating system's generator, single use (taken out of
//! the table when presented, a new one issued with every admission and resumption), and
//! only ever leads to the session it was issued by. One exception keeps a lost hello
//! from stranding a browser: the token just presented leads back to its session until
//! the browser answers a ping on the new connection (sent after the hello, so the hello
//! with the new token reached it). The table
//! holds at most two entries per live session, so it is bounded by `http.max_sessions`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use axum::extract::ws::WebSocket;
use tokio::sync::mpsc;

/// Hex characters in a token.
pub const TOKEN_LEN: usize = 64;

/// A new WebSocket for a waiting session.
pub struct Rejoin {
    pub socket: WebSocket,
    pub peer: SocketAddr,
    /// The token it presented.
    pub token: String,
}

/// Every live session's current token.
#[derive(Default)]
pub struct Resumes {
    slots: Mutex<HashMap<String, mpsc::Sender<Rejoin>>>,
}

impl Resumes {
    fn slots(&self) -> MutexGuard<'_, HashMap<String, mpsc::Sender<Rejoin>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh token leading to `session` (None if the system has no randomness to give).
    pub fn issue(&self, session: &mpsc::Sender<Rejoin>) -> Option<String> {
        let token = new_token()?;
        self.slots().insert(token.clone(), session.clone());
        Some(token)
    }

    /// `token` leads to `session` again (a presented one kept as a fallback).
    pub fn restore(&self, token: String, session: &mpsc::Sender<Rejoin>) {
        self.slots().insert(token, session.clone());
    }

    /// The session a presented token leads to; the token is used up either way.
    pub fn take(&self, token: &str) -> Option<mpsc::Sender<Rejoin>> {
        if token.len() != TOKEN_LEN {
            return None;
        }
        self.slots().remove(token)
    }

    /// The session ends: its token leads nowhere any more.
    pub fn revoke(&self, token: &str) {
        self.slots().remove(token);
    }

    pub fn len(&self) -> usize {
        self.slots().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn new_token() -> Option<String> {
    let mut bytes = [0u8; TOKEN_LEN / 2];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_and_lead_only_to_their_session() {
        let r = Resumes::default();
        let (a, _ra) = mpsc::channel(1);
        let (b, _rb) = mpsc::channel(1);
        let ta = r.issue(&a).unwrap();
        let tb = r.issue(&b).unwrap();
        assert_eq!(ta.len(), TOKEN_LEN);
        assert_ne!(ta, tb);
        assert!(r.take(&ta).unwrap().same_channel(&a));
        assert!(r.take(&ta).is_none(), "used up");
        assert!(r.take("0".repeat(TOKEN_LEN).as_str()).is_none(), "guessed");
        assert!(r.take("short").is_none());
        r.revoke(&tb);
        assert!(r.take(&tb).is_none(), "revoked");
        assert!(r.is_empty());
        r.restore(ta.clone(), &a);
        assert!(r.take(&ta).unwrap().same_channel(&a), "kept as a fallback");
    }
}
