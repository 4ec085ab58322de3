//! The cluster pool's task: owns the Redis connection and the [`LeaseBook`], runs the
//! scripts for claims, renewals, releases and the node heartbeat, and tells a session
//! when its lease is given up. Redis calls run as futures beside the loop, so a slow
//! Redis never holds up the timers that fence leases.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Value};
use serde_json::json;
use sipline_sip::Account;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};

use super::book::{Fenced, LeaseBook, LeaseValue, RenewBatch, Renewed};
use super::scripts::{Keys, Scripts};
use super::{ClaimError, Claimed, ClusterSettings, ClusterStats, Command, Release};

/// Candidate keys per CLAIM call, lease keys per RENEW call: bounds the time one script
/// holds Redis.
const CLAIM_CHUNK: usize = 128;
const RENEW_CHUNK: usize = 512;
/// Between connection attempts while Redis is unreachable.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

type Op = Pin<Box<dyn Future<Output = Done> + Send>>;

enum Done {
    Connected(Result<ConnectionManager, RedisError>),
    Claimed {
        reply: oneshot::Sender<Result<Claimed, ClaimError>>,
        sent: Instant,
        result: Result<ClaimAnswer, RedisError>,
    },
    Renewed {
        batch: RenewBatch,
        result: Result<Vec<Renewed>, RedisError>,
    },
    Released(usize),
    /// How long the settle window still runs (ms; 0 or less: none), and the longest TTL.
    Heartbeat(Result<(i64, u64), RedisError>),
    Status(Result<serde_json::Value, String>),
}

enum ClaimAnswer {
    Leased {
        index: usize,
        token: u64,
        previous: String,
    },
    NoneFree,
    Settling,
}

struct Driver {
    client: redis::Client,
    settings: Arc<ClusterSettings>,
    keys: Keys,
    accounts: Arc<[(String, String)]>,
    scripts: Arc<Scripts>,
    conn: Option<ConnectionManager>,
    book: LeaseBook,
    /// Leased to a session here (claimed, not yet released), fenced or not, and how its
    /// session hears that the lease was given up.
    lost: HashMap<usize, watch::Sender<Option<Fenced>>>,
    /// Release requested, Redis not yet answered: not a candidate for claims.
    releasing: HashSet<usize>,
    stats: Arc<ClusterStats>,
    ops: FuturesUnordered<Op>,
    next_heartbeat: Instant,
    /// Waiting for every pending release to reach Redis.
    flushes: Vec<oneshot::Sender<()>>,
    /// Waiting for the one status read in flight (later askers share it).
    status_waiters: Vec<oneshot::Sender<Result<serde_json::Value, String>>>,
    /// The longest lease TTL any node uses, as far as this node has seen (ms): the settle
    /// window after Redis lost its data must outlast every holder's renewal.
    known_max_ttl: u64,
}

pub(super) fn spawn(
    client: redis::Client,
    settings: Arc<ClusterSettings>,
    accounts: &[Account],
    (rx, releases): (mpsc::Receiver<Command>, mpsc::UnboundedReceiver<Release>),
    stats: Arc<ClusterStats>,
) {
    let keys = Keys::new(&settings.key_prefix);
    let accounts = accounts
        .iter()
        .map(|a| (keys.lease(&a.user, &a.domain), format!("{}@{}", a.user, a.domain)))
        .collect();
    let now = Instant::now();
    let driver = Driver {
        client,
        book: LeaseBook::new(settings.lease_ttl, now.into_std()),
        settings,
        keys,
        accounts,
        scripts: Arc::new(Scripts::default()),
        conn: None,
        lost: HashMap::new(),
        releasing: HashSet::new(),
        stats,
        ops: FuturesUnordered::new(),
        next_heartbeat: now,
        flushes: Vec::new(),
        status_waiters: Vec::new(),
        known_max_ttl: 0,
    };
    tokio::spawn(driver.run(rx, releases));
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, mut releases: mpsc::UnboundedReceiver<Release>) {
        self.connect(Duration::ZERO);
        let mut open = true;
        while open || !self.ops.is_empty() {
            let wake = self.wake_at();
            tokio::select! {
                cmd = rx.recv(), if open => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => open = false,
                },
                Some(r) = releases.recv() => self.release(r.index, r.unregistered),
                Some(done) = self.ops.next(), if !self.ops.is_empty() => self.on_done(done),
                _ = sleep_until(wake) => {}
            }
            if Instant::now() >= self.next_heartbeat {
                // before looking for leases nobody holds, take the releases already sent
                while let Ok(r) = releases.try_recv() {
                    self.release(r.index, r.unregistered);
                }
                self.release_abandoned();
            }
            self.tick();
        }
    }

    fn wake_at(&self) -> Instant {
        let book = self.book.poll_timeout().map(Instant::from_std);
        book.map_or(self.next_heartbeat, |b| b.min(self.next_heartbeat))
    }

    fn ttl_ms(&self) -> u64 {
        self.settings.lease_ttl.as_millis() as u64
    }

    /// ARGV[1..=3] of every script but RELEASE: this node's TTL, its name, the longest
    /// TTL it has seen.
    fn common_args(&self) -> [String; 3] {
        let ttl = self.ttl_ms();
        [
            ttl.to_string(),
            self.settings.node.clone(),
            self.known_max_ttl.max(ttl).to_string(),
        ]
    }

    fn connect(&mut self, after: Duration) {
        let client = self.client.clone();
        // a request Redis does not answer in a fifth of the TTL is failed, so a renewal
        // can be retried before the lease must be fenced
        let patience = self.settings.lease_ttl / 5;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(patience))
            .set_response_timeout(Some(patience))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        self.ops.push(Box::pin(async move {
            tokio::time::sleep(after).await;
            Done::Connected(ConnectionManager::new_with_config(client, config).await)
        }));
    }

    fn redis_ok(&self, ok: bool) {
        self.stats.redis_up.store(ok, Ordering::Relaxed);
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Claim(reply) => self.claim(reply),
            Command::Status(reply) => self.status(reply),
            Command::Flush(reply) => self.flushes.push(reply),
        }
    }

    fn claim(&mut self, reply: oneshot::Sender<Result<Claimed, ClaimError>>) {
        let Some(conn) = self.conn.clone() else {
            self.stats.claim_failures.fetch_add(1, Ordering::Relaxed);
            let _ = reply.send(Err(ClaimError::Unavailable("Redis unreachable".into())));
            return;
        };
        let candidates: Vec<(usize, String)> = (0..self.accounts.len())
            .filter(|i| !self.lost.contains_key(i) && !self.releasing.contains(i))
            .map(|i| (i, self.accounts[i].0.clone()))
            .collect();
        let (scripts, control) = (Arc::clone(&self.scripts), self.keys.control());
        let args = self.common_args();
        let sent = Instant::now();
        self.ops.push(Box::pin(async move {
            let result = claim_first_free(conn, &scripts, &control, &candidates, &args).await;
            Done::Claimed { reply, sent, result }
        }));
    }

    fn on_claimed(
        &mut self,
        reply: oneshot::Sender<Result<Claimed, ClaimError>>,
        sent: Instant,
        result: Result<ClaimAnswer, RedisError>,
    ) {
        let outcome = match result {
            Err(e) => {
                self.redis_ok(false);
                self.stats.claim_failures.fetch_add(1, Ordering::Relaxed);
                Err(ClaimError::Unavailable(e.to_string()))
            }
            Ok(ClaimAnswer::NoneFree) => Err(ClaimError::NoneFree),
            Ok(ClaimAnswer::Settling) => {
                self.stats.settling.store(true, Ordering::Relaxed);
                Err(ClaimError::Settling)
            }
            Ok(ClaimAnswer::Leased {
                index,
                token,
                previous,
            }) => {
                self.stats.settling.store(false, Ordering::Relaxed);
                self.leased(index, token, previous, sent)
            }
        };
        if let Err(Ok(claimed)) = reply.send(outcome) {
            // the session gave up waiting: hand the account straight back
            self.release(claimed.index, true);
        }
    }

    fn leased(
        &mut self,
        index: usize,
        token: u64,
        previous: String,
        sent: Instant,
    ) -> Result<Claimed, ClaimError> {
        let value = LeaseValue::new(&self.settings.node, token);
        if !self
            .book
            .claimed(index, value.clone(), sent.into_std(), Instant::now().into_std())
        {
            // answered too late to be trusted: let Redis expire it
            self.stats.claim_failures.fetch_add(1, Ordering::Relaxed);
            return Err(ClaimError::Unavailable("Redis answered too late".into()));
        }
        let takeover = !previous.is_empty();
        if takeover {
            self.stats.takeovers.fetch_add(1, Ordering::Relaxed);
            tracing::info!(account = %self.accounts[index].1, previous_node = %previous, "account taken over from a node that did not release it");
        }
        let (tx, lost) = watch::channel(None);
        self.lost.insert(index, tx);
        tracing::debug!(account = %self.accounts[index].1, token, "lease claimed");
        Ok(Claimed {
            index,
            takeover,
            lost,
        })
    }

    /// A claim whose `Claimed` was dropped before it became a `Lease` (its task was
    /// cancelled) would be renewed for ever: release what no session can hear about.
    fn release_abandoned(&mut self) {
        let abandoned: Vec<usize> = self
            .lost
            .iter()
            .filter(|(_, tx)| tx.is_closed())
            .map(|(i, _)| *i)
            .collect();
        for index in abandoned {
            tracing::warn!(account = %self.accounts[index].1, "cluster: a lease nobody holds, released");
            self.release(index, false);
        }
    }

    fn release(&mut self, index: usize, unregistered: bool) {
        self.lost.remove(&index);
        let Some(value) = self.book.released(index) else {
            return; // fenced earlier: Redis expires it (or another node holds it now)
        };
        let Some(mut conn) = self.conn.clone() else {
            return; // it expires after the TTL
        };
        self.releasing.insert(index);
        let script = Arc::clone(&self.scripts);
        let key = self.accounts[index].0.clone();
        self.ops.push(Box::pin(async move {
            let r: Result<i64, _> = script
                .release
                .key(&key)
                .arg(&value.0)
                .arg(if unregistered { "1" } else { "0" })
                .invoke_async(&mut conn)
                .await;
            if let Err(e) = r {
                tracing::warn!(%key, error = %e, "lease not deleted: it expires after the TTL");
            }
            Done::Released(index)
        }));
    }

    /// One status read at a time, whoever asks: `/cluster` cannot pile work on the
    /// connection the renewals use.
    fn status(&mut self, reply: oneshot::Sender<Result<serde_json::Value, String>>) {
        let Some(conn) = self.conn.clone() else {
            let _ = reply.send(Err("Redis unreachable".into()));
            return;
        };
        self.status_waiters.push(reply);
        if self.status_waiters.len() > 1 {
            return;
        }
        let keys = self.keys.clone();
        self.ops.push(Box::pin(async move {
            Done::Status(read_status(conn, &keys).await.map_err(|e| e.to_string()))
        }));
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Connected(Ok(conn)) => {
                tracing::info!("cluster: connected to Redis");
                self.redis_ok(true);
                self.conn = Some(conn);
                self.next_heartbeat = Instant::now();
            }
            Done::Connected(Err(e)) => {
                self.redis_ok(false);
                tracing::warn!(error = %e, "cluster: Redis unreachable, trying again");
                self.connect(RECONNECT_EVERY);
            }
            Done::Claimed { reply, sent, result } => self.on_claimed(reply, sent, result),
            Done::Renewed { batch, result } => self.on_renewed(&batch, result),
            Done::Released(index) => {
                self.releasing.remove(&index);
            }
            Done::Heartbeat(r) => {
                self.redis_ok(r.is_ok());
                if let Ok((settling, max_ttl)) = r {
                    self.stats.settling.store(settling > 0, Ordering::Relaxed);
                    self.known_max_ttl = self.known_max_ttl.max(max_ttl);
                }
            }
            Done::Status(r) => {
                for waiter in self.status_waiters.drain(..) {
                    let _ = waiter.send(r.clone());
                }
            }
        }
    }

    fn on_renewed(&mut self, batch: &RenewBatch, result: Result<Vec<Renewed>, RedisError>) {
        let now = Instant::now().into_std();
        match result {
            Ok(outcomes) => {
                self.redis_ok(true);
                let restored = outcomes.iter().filter(|o| **o == Renewed::Restored).count();
                if restored > 0 {
                    tracing::warn!(restored, "cluster: Redis had lost leases of ours; written again");
                }
                self.book.on_renewed(batch, &outcomes, now);
            }
            Err(e) => {
                self.redis_ok(false);
                self.stats.renew_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, failures = self.book.failures_in_row + 1, "cluster: lease renewal failed");
                self.book.on_renew_failed(now);
            }
        }
    }

    /// Timers: fence what expires, send a due renewal and heartbeat, tell sessions.
    fn tick(&mut self) {
        let now = Instant::now();
        self.book.handle_timeout(now.into_std());
        if let Some(batch) = self.book.poll_renew(now.into_std()) {
            match self.conn.clone() {
                Some(conn) => self.renew(conn, batch),
                None => {
                    self.stats.renew_failures.fetch_add(1, Ordering::Relaxed);
                    self.book.on_renew_failed(now.into_std());
                }
            }
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.settings.lease_ttl / 3;
            self.heartbeat();
        }
        while let Some((index, why)) = self.book.poll_fenced() {
            self.stats.fenced.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(account = %self.accounts[index].1, ?why, "cluster: lease given up");
            if let Some(tx) = self.lost.get(&index) {
                tx.send_replace(Some(why));
            }
        }
        self.stats.held.store(self.book.len(), Ordering::Relaxed);
        if self.releasing.is_empty() {
            for done in self.flushes.drain(..) {
                let _ = done.send(());
            }
        }
    }

    fn renew(&mut self, conn: ConnectionManager, batch: RenewBatch) {
        let keys: Vec<String> = batch
            .leases
            .iter()
            .map(|(i, _)| self.accounts[*i].0.clone())
            .collect();
        let (scripts, control) = (Arc::clone(&self.scripts), self.keys.control());
        let args = self.common_args();
        self.ops.push(Box::pin(async move {
            let result = renew_all(conn, &scripts, &control, &keys, &batch, &args).await;
            Done::Renewed { batch, result }
        }));
    }

    fn heartbeat(&mut self) {
        let Some(mut conn) = self.conn.clone() else {
            return;
        };
        let s = &self.settings;
        let info = json!({
            "node": s.node,
            "http": s.http_addr,
            "sip": s.sip_addr,
            "leases": self.book.len(),
        })
        .to_string();
        let (control, key) = (self.keys.control(), self.keys.node(&s.node));
        let args = self.common_args();
        let scripts = Arc::clone(&self.scripts);
        self.ops.push(Box::pin(async move {
            let r: Result<Vec<i64>, _> = scripts
                .heartbeat
                .key(control.as_slice())
                .key(&key)
                .arg(args.as_slice())
                .arg(info)
                .invoke_async(&mut conn)
                .await;
            let r = r.map(|v| {
                let settling = v.first().copied().unwrap_or(0);
                (settling, v.get(1).copied().unwrap_or(0).max(0) as u64)
            });
            Done::Heartbeat(r)
        }));
    }
}

async fn claim_first_free(
    mut conn: ConnectionManager,
    scripts: &Scripts,
    control: &[String; 4],
    candidates: &[(usize, String)],
    args: &[String; 3],
) -> Result<ClaimAnswer, RedisError> {
    for chunk in candidates.chunks(CLAIM_CHUNK) {
        let mut call = scripts.claim.prepare_invoke();
        call.key(control.as_slice()).arg(args.as_slice());
        for (_, key) in chunk {
            call.key(key);
        }
        let answer: Vec<Value> = call.invoke_async(&mut conn).await?;
        match answer.first().and_then(int) {
            Some(-1) => return Ok(ClaimAnswer::Settling),
            Some(n) if n >= 1 && (n as usize) <= chunk.len() => {
                let token = answer.get(1).and_then(int).unwrap_or(0).max(0) as u64;
                let previous = answer.get(2).and_then(text).unwrap_or_default();
                let index = chunk[n as usize - 1].0;
                return Ok(ClaimAnswer::Leased {
                    index,
                    token,
                    previous,
                });
            }
            _ => {}
        }
    }
    Ok(ClaimAnswer::NoneFree)
}

async fn renew_all(
    mut conn: ConnectionManager,
    scripts: &Scripts,
    control: &[String; 4],
    keys: &[String],
    batch: &RenewBatch,
    args: &[String; 3],
) -> Result<Vec<Renewed>, RedisError> {
    let mut outcomes = Vec::with_capacity(keys.len());
    for (keys, leases) in keys.chunks(RENEW_CHUNK).zip(batch.leases.chunks(RENEW_CHUNK)) {
        let mut call = scripts.renew.prepare_invoke();
        call.key(control.as_slice()).arg(args.as_slice());
        for (key, (_, value)) in keys.iter().zip(leases) {
            call.key(key).arg(&value.0);
        }
        let answer: Vec<i64> = match call.invoke_async(&mut conn).await {
            Ok(answer) => answer,
            // what the chunks before said still counts (a lost lease among them must be
            // given up now); the rest stay unconfirmed and are retried or fenced in time
            Err(_) if !outcomes.is_empty() => return Ok(outcomes),
            Err(e) => return Err(e),
        };
        outcomes.extend(answer.into_iter().map(|n| match n {
            1 => Renewed::Kept,
            2 => Renewed::Restored,
            _ => Renewed::Lost,
        }));
    }
    // an answer shorter than the batch leaves the rest unconfirmed (they fence in time)
    Ok(outcomes)
}

/// Every node's heartbeat and every lease (SCAN, so Redis is never blocked).
async fn read_status(mut conn: ConnectionManager, keys: &Keys) -> Result<serde_json::Value, RedisError> {
    let node_keys = scan(&mut conn, &keys.node_pattern()).await?;
    let mut nodes = Vec::new();
    for key in node_keys {
        let v: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
        if let Some(v) = v.and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok()) {
            nodes.push(v);
        }
    }
    let mut leases = Vec::new();
    for key in scan(&mut conn, &keys.lease_pattern()).await? {
        let Some(account) = keys.account_of(&key) else {
            continue;
        };
        let (value, ttl): (Option<String>, i64) = redis::pipe()
            .cmd("GET")
            .arg(&key)
            .cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        if let Some((node, token)) = value.as_deref().and_then(LeaseValue::parse) {
            leases.push(json!({ "account": account, "node": node, "token": token, "expiresInMs": ttl }));
        }
    }
    nodes.sort_by(|a, b| a["node"].as_str().cmp(&b["node"].as_str()));
    leases.sort_by(|a, b| a["account"].as_str().cmp(&b["account"].as_str()));
    Ok(json!({ "nodes": nodes, "leases": leases }))
}

async fn scan(conn: &mut ConnectionManager, pattern: &str) -> Result<Vec<String>, RedisError> {
    let mut cursor = 0u64;
    let mut out = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(conn)
            .await?;
        out.extend(batch);
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}
