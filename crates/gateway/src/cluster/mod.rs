//! Several gateway nodes sharing one account pool through Redis (`[cluster] redis`).
//!
//! Each account is leased by at most one node at a time: a lease is a Redis key with an
//! expiry, claimed atomically with a fencing token, renewed while its session lives,
//! and deleted after its line has unregistered. A node that cannot renew in time stops
//! using the account before Redis would let another node have it ([`book`]). A node
//! that dies leaves its leases to expire; the node that claims such an account next
//! first removes the dead node's binding at the PBX. A Redis that restarts (empty, from
//! a snapshot, or failed over) grants no new lease until the holders have written theirs
//! again ([`scripts`]).
//!
//! [`book`] is the sans-IO core (what is held, when to renew, when to give up),
//! [`scripts`] the Redis side, [`driver`] the task between them.

pub mod book;
pub mod driver;
pub mod scripts;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use sipline_sip::Account;
use tokio::sync::{mpsc, oneshot, watch};

pub use book::Fenced;

/// `[cluster]` as resolved.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// `redis://HOST:PORT[/DB]` (credentials allowed, never logged).
    pub redis_url: String,
    /// This node's name in Redis (unique per node).
    pub node: String,
    pub lease_ttl: Duration,
    pub key_prefix: String,
    /// What `/cluster` shows of this node: where browsers and the PBX reach it.
    pub http_addr: String,
    pub sip_addr: String,
}

/// What `/metrics` shows of the cluster pool.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub held: AtomicUsize,
    pub renew_failures: AtomicU64,
    pub fenced: AtomicU64,
    pub claim_failures: AtomicU64,
    pub takeovers: AtomicU64,
    pub redis_up: AtomicBool,
    pub settling: AtomicBool,
}

impl ClusterStats {
    pub fn prometheus(&self) -> String {
        let gauge = |name: &str, help: &str, v: u64| {
            format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n")
        };
        let counter = |name: &str, help: &str, v: u64| {
            format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n")
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            gauge(
                "sipline_cluster_leases_held",
                "Account leases this node holds in Redis.",
                self.held.load(Ordering::Relaxed) as u64,
            ),
            gauge(
                "sipline_cluster_redis_up",
                "1 while the last Redis operation succeeded.",
                u64::from(self.redis_up.load(Ordering::Relaxed)),
            ),
            gauge(
                "sipline_cluster_settling",
                "1 while Redis, back without its data, grants no new lease.",
                u64::from(self.settling.load(Ordering::Relaxed)),
            ),
            counter(
                "sipline_cluster_renew_failures_total",
                "Lease renewals that failed (Redis unreachable, slow or erroring).",
                load(&self.renew_failures),
            ),
            counter(
                "sipline_cluster_fenced_total",
                "Leases given up because they could not be renewed in time or were lost.",
                load(&self.fenced),
            ),
            counter(
                "sipline_cluster_claim_failures_total",
                "Claims that failed because Redis could not be used.",
                load(&self.claim_failures),
            ),
            counter(
                "sipline_cluster_takeovers_total",
                "Accounts claimed from a node that died holding them.",
                load(&self.takeovers),
            ),
        ]
        .concat()
    }
}

/// An account leased in Redis.
#[derive(Debug)]
pub struct Claimed {
    pub index: usize,
    /// Its last holder died without unregistering: remove its binding at the PBX first.
    pub takeover: bool,
    /// Becomes `Some` when the lease is given up.
    pub lost: watch::Receiver<Option<Fenced>>,
}

/// Why no account was leased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimError {
    /// Every account is leased, cluster-wide.
    NoneFree,
    /// Redis cannot be used now (the reason, for the log).
    Unavailable(String),
    /// Redis came back without its data: no new lease until earlier holders wrote theirs again.
    Settling,
}

pub(crate) enum Command {
    Claim(oneshot::Sender<Result<Claimed, ClaimError>>),
    Status(oneshot::Sender<Result<serde_json::Value, String>>),
    /// Answered once no release is waiting for Redis.
    Flush(oneshot::Sender<()>),
}

/// A lease to give back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Release {
    pub index: usize,
    pub unregistered: bool,
}

/// The handle the pool and `/cluster` use; the driver task runs until every handle is gone.
#[derive(Clone)]
pub struct Cluster {
    tx: mpsc::Sender<Command>,
    /// Releases have their own channel: one per lease at most, so bounded by the pool,
    /// and never lost to a full queue (a lost release would keep an account for a TTL).
    releases: mpsc::UnboundedSender<Release>,
    pub stats: Arc<ClusterStats>,
    pub settings: Arc<ClusterSettings>,
}

/// Commands waiting for the driver; beyond that, claims are refused (and counted).
const QUEUE: usize = 1024;

impl Cluster {
    /// Starts the driver (it connects in the background and keeps trying).
    pub fn start(settings: ClusterSettings, accounts: &[Account]) -> Result<Cluster, String> {
        let client = redis::Client::open(settings.redis_url.as_str()).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let (releases, release_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(ClusterStats::default());
        let settings = Arc::new(settings);
        driver::spawn(
            client,
            Arc::clone(&settings),
            accounts,
            (rx, release_rx),
            Arc::clone(&stats),
        );
        Ok(Cluster {
            tx,
            releases,
            stats,
            settings,
        })
    }

    pub async fn claim(&self) -> Result<Claimed, ClaimError> {
        let (reply, answer) = oneshot::channel();
        if self.tx.try_send(Command::Claim(reply)).is_err() {
            self.stats.claim_failures.fetch_add(1, Ordering::Relaxed);
            return Err(ClaimError::Unavailable("cluster driver busy".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(ClaimError::Unavailable("cluster driver gone".into())))
    }

    /// The session is over: delete the lease (if still ours). `unregistered`: its line was
    /// seen to unregister, so the PBX has no binding of ours left to clear.
    pub fn release(&self, index: usize, unregistered: bool) {
        let _ = self.releases.send(Release { index, unregistered });
    }

    /// Waits (up to `within`) until every release asked for has reached Redis: before the
    /// process exits, so a drained node leaves no lease behind.
    pub async fn flush(&self, within: Duration) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Command::Flush(reply)).await.is_ok() {
            let _ = tokio::time::timeout(within, done).await;
        }
    }

    /// Every node's heartbeat and every lease, as Redis has them.
    pub async fn status(&self) -> Result<serde_json::Value, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .try_send(Command::Status(reply))
            .map_err(|_| "cluster driver busy".to_owned())?;
        answer.await.map_err(|_| "cluster driver gone".to_owned())?
    }
}
