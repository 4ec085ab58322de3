//! Issue 14: several gateway nodes sharing one account pool through a real
//! `redis-server`, against Kamailio: no account is ever leased twice, a dead node's
//! accounts come back to the others, and a Redis restart costs no call.
//!
//! Slots 130–139 (Kamailio 17300, nodes' HTTP 18130+, SIP 17302+10k), Redis 17395–17397,
//! RTP 47000+.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A `redis-server` of its own on loopback, without persistence: a restart loses
/// everything, the hardest case for the pool.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let mut r = Redis {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        r.launch();
        r
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("redis-server (lab/install.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Killed as a crash would, losing every key.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Keys matching `pattern` (SCAN).
    fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .cli(&["--scan", "--pattern", pattern])
            .lines()
            .map(str::to_owned)
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort();
        keys
    }

    /// Account → holding node, as Redis has it now.
    fn leases(&self) -> HashMap<String, String> {
        self.keys("sipline:lease:*")
            .into_iter()
            .filter(|k| !k.ends_with(":held"))
            .map(|k| {
                let value = self.cli(&["GET", &k]);
                let node = value
                    .trim()
                    .rsplit_once(' ')
                    .map(|(n, _)| n.to_owned())
                    .unwrap_or_default();
                let account = k.trim_start_matches("sipline:lease:").to_owned();
                (account, node)
            })
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill9();
    }
}

const PBX_SLOT: u16 = 130;

/// Node `i` of a cluster on Redis `redis` with this lease TTL, sharing Kamailio's
/// accounts 880–898.
fn node_config(i: u16, redis: u16, ttl: f64, extra: &str) -> String {
    let (own, pbx) = (Slot::new(PBX_SLOT + i), Slot::new(PBX_SLOT));
    let rtp = 47000 + i * 40;
    format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\nmax_sessions_per_ip = 64\nws_idle_timeout = 300\nresume_window = 0\n\n\
         [sip]\nlisten = \"127.0.0.1:{sip}\"\nregistrar = \"sip:127.0.0.1:{pbx}\"\n\n\
         [pool]\ndomain = \"127.0.0.1\"\nrange = {{ from = 880, to = 898 }}\nadmission_wait = 2\n\n\
         [media]\nrtp_ports = \"{rtp}-{rtp_end}\"\n\n\
         [cluster]\nredis = \"redis://127.0.0.1:{redis}\"\nnode = \"node-{i}\"\nlease_ttl = {ttl}\n{extra}",
        http = own.http,
        sip = own.sip,
        pbx = pbx.pbx,
        rtp_end = rtp + 39,
    )
}

fn start_nodes(n: u16, redis: u16, ttl: f64) -> Vec<Sipline> {
    (0..n)
        .map(|i| Sipline::start(&node_config(i, redis, ttl, "")))
        .collect()
}

/// Waits until every node says it would admit a browser (Redis reached, and the settle
/// window a fresh Redis opens is over).
async fn wait_ready(nodes: &[Sipline], timeout: Duration) {
    let t0 = Instant::now();
    for node in nodes {
        loop {
            let (status, body) = node.get("/readyz").await;
            if status == 200 {
                break;
            }
            assert!(
                t0.elapsed() < timeout,
                "a node never became ready: {body}\n{}",
                node.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The accounts a node's sessions hold, as the node itself says (`/cluster` → `self`).
async fn node_accounts(node: &Sipline) -> BTreeSet<String> {
    let (_, body) = node.get("/cluster").await;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["self"]["leased"]
        .as_array()
        .map(|a| a.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Connects until admitted (a refused newcomer tries again), up to `deadline`.
async fn admitted(url: &str, deadline: Instant) -> (Browser, String) {
    loop {
        let mut b = Browser::connect(url).await;
        let first = b.wait_for("registrationStateChanged", |_| true, WAIT).await;
        if first["state"] == "accepted" {
            let user = b.wait_for("sipUserNameReceived", |_| true, WAIT).await["user"]
                .as_str()
                .unwrap()
                .to_owned();
            b.wait_line("registered", WAIT).await;
            return (b, user);
        }
        assert!(Instant::now() < deadline, "never admitted: {first}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// AoR → its contacts, from Kamailio's `ul.dump`.
fn contacts(pbx: &Pbx) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let mut aor = None;
    for line in pbx.dump().lines() {
        let line = line.trim();
        if let Some(a) = line.strip_prefix("AoR: ") {
            aor = Some(a.trim().to_owned());
            out.entry(a.trim().to_owned()).or_default();
        } else if let (Some(c), Some(a)) = (line.strip_prefix("Address: "), &aor) {
            out.get_mut(a).unwrap().push(c.trim().to_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nineteen_browsers_over_three_nodes_then_one_node_dies() {
    let pbx = Pbx::start(Slot::new(PBX_SLOT).pbx);
    let redis = Redis::start(17395);
    let ttl = 4.0;
    let mut nodes = start_nodes(3, redis.port, ttl);
    wait_ready(&nodes, Duration::from_secs(20)).await;

    // 19 browsers spread over the nodes hold 19 distinct accounts
    let mut browsers: Vec<(usize, Browser, String)> = Vec::new();
    for k in 0..19 {
        let n = k % 3;
        let (b, user) = Browser::registered(&nodes[n].ws_url()).await;
        browsers.push((n, b, user));
    }
    let users: BTreeSet<&str> = browsers.iter().map(|(_, _, u)| u.as_str()).collect();
    assert_eq!(users.len(), 19, "19 distinct accounts: {users:?}");
    // the 20th, on any node, is told connectionLimit
    for node in &nodes {
        let mut late = Browser::connect(&node.ws_url()).await;
        let refused = late.wait_for("registrationStateChanged", |_| true, WAIT).await;
        assert_eq!(refused["state"], "connectionLimit");
    }
    let leases = redis.leases();
    assert_eq!(leases.len(), 19, "{leases:?}");
    for (n, _, user) in &browsers {
        assert_eq!(leases[&format!("{user}@127.0.0.1")], format!("node-{n}"));
    }
    let (status, body) = nodes[1].get("/cluster").await;
    assert_eq!(status, 200, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["nodes"].as_array().unwrap().len(), 3, "{status}");
    assert_eq!(status["leases"].as_array().unwrap().len(), 19, "{status}");
    let m = nodes[0].metrics().await;
    assert_eq!(m["sipline_cluster_leases_held"], 7.0);
    assert_eq!(m["sipline_cluster_redis_up"], 1.0);
    pbx.wait_users(WAIT, |u| u.len() == 19);

    // node 2 dies: its accounts come back to the others within the TTL and a few seconds
    let dead: BTreeSet<String> = browsers
        .iter()
        .filter(|(n, ..)| *n == 2)
        .map(|(_, _, u)| u.clone())
        .collect();
    let dead_port = Slot::new(PBX_SLOT + 2).sip;
    nodes[2].signal("KILL");
    assert!(nodes[2].wait_exit(WAIT).is_some());
    let killed_at = Instant::now();
    let mut taken = Vec::new();
    for k in 0..dead.len() {
        let node = &nodes[k % 2];
        let (b, user) = admitted(&node.ws_url(), killed_at + Duration::from_secs_f64(ttl + 8.0)).await;
        assert!(dead.contains(&user), "{user} was not the dead node's");
        taken.push((k % 2, b, user));
    }
    let recovered = killed_at.elapsed();
    println!(
        "the dead node's {} accounts leased again {recovered:?} after the kill",
        dead.len()
    );
    assert!(recovered < Duration::from_secs_f64(ttl + 5.0), "{recovered:?}");
    // Kamailio: one contact per account, the new node's (the dead node's was removed)
    let book = contacts(&pbx);
    for (n, _, user) in &taken {
        let c = &book[user];
        let port = Slot::new(PBX_SLOT + *n as u16).sip;
        assert_eq!(c.len(), 1, "{user}: {c:?}");
        assert!(
            c[0].contains(&format!(":{port}")),
            "{user}: {c:?}, expected port {port}"
        );
        assert!(!c[0].contains(&format!(":{dead_port}")));
    }
    assert_eq!(book.len(), 19, "{book:?}");
    assert!(book.values().all(|c| c.len() == 1), "{book:?}");
    assert!(
        nodes[0].metrics().await["sipline_cluster_takeovers_total"]
            + nodes[1].metrics().await["sipline_cluster_takeovers_total"]
            >= dead.len() as f64
    );
    // and the pool is full again
    let mut late = Browser::connect(&nodes[0].ws_url()).await;
    let refused = late.wait_for("registrationStateChanged", |_| true, WAIT).await;
    assert_eq!(refused["state"], "connectionLimit");
    // clean departures delete their leases at once
    for (_, b, _) in taken
        .into_iter()
        .chain(browsers.into_iter().filter(|(n, ..)| *n != 2))
    {
        b.close().await;
    }
    let t0 = Instant::now();
    while !redis.leases().is_empty() {
        assert!(t0.elapsed() < WAIT, "leases left: {:?}", redis.leases());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pbx.wait_users(WAIT, |u| u.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connect_disconnect_cycles_leave_no_lease() {
    let _pbx = Pbx::start(Slot::new(PBX_SLOT + 5).pbx);
    let redis = Redis::start(17396);
    // the default TTL: nothing left over can have expired by itself when we look
    let config = |i: u16| {
        node_config(i + 5, redis.port, 15.0, "").replace(
            &format!("registrar = \"sip:127.0.0.1:{}\"", Slot::new(PBX_SLOT).pbx),
            &format!("registrar = \"sip:127.0.0.1:{}\"", Slot::new(PBX_SLOT + 5).pbx),
        )
    };
    let nodes: Vec<Sipline> = (0..2).map(|i| Sipline::start(&config(i))).collect();
    wait_ready(&nodes, Duration::from_secs(30)).await;
    let urls: Vec<String> = nodes.iter().map(Sipline::ws_url).collect();
    let t0 = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let urls = urls.clone();
            tokio::spawn(async move {
                let mut admitted = 0;
                for k in 0..125 {
                    let mut b = Browser::connect(&urls[(w + k) % 2]).await;
                    let first = b.wait_for("registrationStateChanged", |_| true, WAIT).await;
                    if first["state"] == "accepted" {
                        admitted += 1;
                    }
                    match k % 3 {
                        0 => b.close().await,
                        1 => b.reset(),
                        _ => {
                            // registered first, then gone
                            if first["state"] == "accepted" {
                                b.wait_line("registered", WAIT).await;
                            }
                            b.close().await
                        }
                    }
                }
                admitted
            })
        })
        .collect();
    let mut admitted = 0;
    for w in workers {
        admitted += w.await.unwrap();
    }
    println!("1000 cycles in {:?}, {admitted} admitted", t0.elapsed());
    assert!(admitted >= 950, "only {admitted} of 1000 admitted");
    let done = Instant::now();
    for node in &nodes {
        node.wait_metrics(Duration::from_secs(10), |m| {
            m["sipline_sessions"] == 0.0
                && m["sipline_pool_leased"] == 0.0
                && m["sipline_cluster_leases_held"] == 0.0
        })
        .await;
    }
    // the releases reach Redis a moment later; well before any lease could expire
    let mut left = redis.keys("sipline:lease:*");
    while !left.is_empty() && done.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = redis.keys("sipline:lease:*");
    }
    assert!(
        left.is_empty(),
        "leases (or :held markers) left in Redis: {left:?}"
    );
    for node in &nodes {
        assert_eq!(
            node.metrics().await["sipline_cluster_fenced_total"],
            0.0,
            "no lease was given up"
        );
    }
}

/// Samples every node's leases in the order A, B, A (and B, A, B): an account both
/// samples of one node list and the middle sample of another lists was held by both at
/// the middle sample's time.
async fn doubles(nodes: &[&Sipline]) -> Vec<String> {
    let mut found = Vec::new();
    for (i, a) in nodes.iter().enumerate() {
        for b in nodes.iter().skip(i + 1) {
            for (x, y) in [(a, b), (b, a)] {
                let first = node_accounts(x).await;
                let middle = node_accounts(y).await;
                let last = node_accounts(x).await;
                for acct in first.intersection(&last).filter(|u| middle.contains(*u)) {
                    found.push(acct.clone());
                }
            }
        }
    }
    found
}

/// Samples a node, Redis, and the node again: an account the node lists both times that
/// Redis (reachable) gives to another node in between is held twice.
async fn redis_disagrees(nodes: &[&Sipline], names: &[&str], redis: &Redis) -> Vec<String> {
    let mut found = Vec::new();
    for (node, name) in nodes.iter().zip(names) {
        let first = node_accounts(node).await;
        let leases = redis.leases();
        let last = node_accounts(node).await;
        for acct in first.intersection(&last) {
            if let Some(holder) = leases.get(&format!("{acct}@127.0.0.1"))
                && holder != name
            {
                found.push(format!("{acct}: {name} uses it, Redis says {holder}"));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_during_calls_loses_no_lease_and_no_audio() {
    if !netns::inside() {
        return netns::rerun("a_redis_restart_during_calls_loses_no_lease_and_no_audio");
    }
    let pbx_slot = Slot::new(PBX_SLOT + 7);
    let _pbx = Pbx::start(pbx_slot.pbx);
    let mut redis = Redis::start(17397);
    let ttl = 10.0;
    let config = |i: u16| {
        node_config(i + 7, redis.port, ttl, "").replace(
            &format!("registrar = \"sip:127.0.0.1:{}\"", Slot::new(PBX_SLOT).pbx),
            &format!("registrar = \"sip:127.0.0.1:{}\"", pbx_slot.pbx),
        )
    };
    let nodes: Vec<Sipline> = (0..2).map(|i| Sipline::start(&config(i))).collect();
    wait_ready(&nodes, Duration::from_secs(30)).await;
    // baresip (1002) plays 440 Hz and records what it hears
    let sip = pbx_slot.pbx + 5;
    let phone = Phone::start_with_env(
        "1002",
        "secret",
        sip,
        pbx_slot.pbx,
        (47400, 47419),
        "auto",
        None,
        sip + 3,
        &[("BS_CODECS", "PCMU/8000/1"), ("BS_TONE", "440")],
    );
    // node 1 holds three more leases through the restart
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(Browser::registered(&nodes[1].ws_url()).await);
    }
    // a snapshot from before the call: the restart loads it, so Redis comes back with
    // its boot marker but without the leases in use
    assert_eq!(redis.cli(&["SAVE"]).trim(), "OK");
    // the browser on node 0 calls baresip and listens for 2 × 8 s: the second window
    // (how often 440 Hz dominates) spans the Redis outage
    let env = [
        ("SIPLINE_URL", format!("http://{}/", nodes[0].http)),
        ("ROLE", "caller".to_owned()),
        ("NUMBER", "1002".to_owned()),
        ("CODEC", "PCMU".to_owned()),
        ("MIC_HZ", "1000".to_owned()),
        ("EXPECT_HZ", "440".to_owned()),
        ("LISTEN_MS", "8000".to_owned()),
        ("PEAKS", "440".to_owned()),
    ];
    let browser = tokio::spawn(async move {
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
        run_browser_script("audio.mjs", &env, Duration::from_secs(120)).await
    });
    nodes[0]
        .wait_metrics(Duration::from_secs(40), |m| m["sipline_sip_dialogs"] >= 1.0)
        .await;
    let before = redis.leases();
    assert_eq!(before.len(), 4, "{before:?}");
    let node_refs: Vec<&Sipline> = nodes.iter().collect();
    let names = ["node-7", "node-8"];
    assert!(doubles(&node_refs).await.is_empty());
    assert!(redis_disagrees(&node_refs, &names, &redis).await.is_empty());

    // in the call: Redis dies with every key, and comes back empty 2 s later
    tokio::time::sleep(Duration::from_secs(9)).await;
    redis.kill9();
    let t_kill = Instant::now();
    // meanwhile a newcomer is refused, clearly
    let mut newcomer = Browser::connect(&nodes[1].ws_url()).await;
    let refused = newcomer
        .wait_for("registrationStateChanged", |_| true, WAIT)
        .await;
    assert_eq!(refused["state"], "connectionLimit");
    let mut checks = 0;
    while t_kill.elapsed() < Duration::from_secs(2) {
        assert_eq!(doubles(&node_refs).await, Vec::<String>::new());
        checks += 1;
    }
    redis.launch();
    // the snapshot was loaded (its leases have expired by now, not its boot marker)
    assert!(!redis.cli(&["GET", "sipline:boot"]).trim().is_empty());
    // the holders write their leases again; nobody else may take them meanwhile: newcomers
    // on both nodes wait and are refused
    let t_back = Instant::now();
    let newcomers: Vec<_> = nodes
        .iter()
        .map(|n| {
            let url = n.ws_url();
            tokio::spawn(async move {
                let mut b = Browser::connect(&url).await;
                b.wait_for("registrationStateChanged", |_| true, WAIT).await
            })
        })
        .collect();
    let mut restored_after = None;
    while t_back.elapsed() < Duration::from_secs_f64(ttl + 2.0) {
        assert_eq!(doubles(&node_refs).await, Vec::<String>::new());
        assert_eq!(
            redis_disagrees(&node_refs, &names, &redis).await,
            Vec::<String>::new()
        );
        checks += 1;
        if restored_after.is_none() && redis.leases() == before {
            restored_after = Some(t_back.elapsed());
        }
    }
    println!("{checks} samples of every node's leases, no account held twice");
    for n in newcomers {
        let first = n.await.unwrap();
        assert_eq!(
            first["state"], "connectionLimit",
            "a newcomer during the settle window: {first}"
        );
    }
    let restored_after = restored_after.expect("the same leases, held by the same nodes, written again");
    println!("leases written again {restored_after:?} after Redis came back");
    assert!(restored_after < Duration::from_secs(5));
    for node in &nodes {
        assert_eq!(
            node.metrics().await["sipline_cluster_fenced_total"],
            0.0,
            "no lease given up"
        );
    }
    let idle_accounts: BTreeSet<String> = idle.iter().map(|(_, u)| u.clone()).collect();
    assert_eq!(node_accounts(&nodes[1]).await, idle_accounts);
    // after the settle window a newcomer is admitted again, with an account nobody holds
    let (_late, user) = admitted(&nodes[1].ws_url(), Instant::now() + Duration::from_secs(15)).await;
    assert!(!idle_accounts.contains(&user), "{user} is held");

    // the call kept its audio both ways through all this
    let (code, out, result) = browser.await.unwrap();
    println!("{out}");
    assert_eq!(code, Some(0), "{out}\n{}", nodes[0].log());
    let r = result.unwrap();
    let snr = r["snrDb"].as_f64().unwrap_or(f64::NAN);
    let share = r["peaks"]["440"].as_f64().unwrap_or(0.0);
    println!(
        "the browser heard 440 Hz at {snr:.1} dB; it dominated {:.0} % of the second window (the outage)",
        share * 100.0
    );
    assert!(snr >= 25.0, "{snr}");
    assert!(share >= 0.9, "{share}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rec = phone.last_recording().expect("baresip recorded the call");
    let (rate, samples) = read_wav(&rec);
    let far = tone_snr_db(&samples[(rate as usize / 2).min(samples.len())..], rate, 1000.0);
    println!("baresip heard 1 kHz at {far:.1} dB");
    assert!(far >= 25.0, "{far}");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_stops_using_its_accounts_before_they_expire() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let pbx_slot = Slot::new(PBX_SLOT + 9);
    let pbx = Pbx::start(pbx_slot.pbx);
    let mut redis = Redis::start(17394);
    // a margin of TTL/5 = 1.2 s between giving the lease up and Redis expiring it
    let ttl = 6.0;
    let config = node_config(9, redis.port, ttl, "").replace(
        &format!("registrar = \"sip:127.0.0.1:{}\"", Slot::new(PBX_SLOT).pbx),
        &format!("registrar = \"sip:127.0.0.1:{}\"", pbx_slot.pbx),
    );
    let mut node = Sipline::start(&config);
    wait_ready(std::slice::from_ref(&node), Duration::from_secs(20)).await;
    let (mut b, user) = Browser::registered(&node.ws_url()).await;
    pbx.wait_users(WAIT, |u| u == [user.clone()]);
    // when Redis would let another node have the account: the lease's expiry as it is
    // now (it is not renewed once Redis is gone)
    let pttl: u64 = redis
        .cli(&["PTTL", &format!("sipline:lease:{user}@127.0.0.1")])
        .trim()
        .parse()
        .unwrap();
    let expires_at = Instant::now() + Duration::from_millis(pttl);
    redis.kill9();
    let t0 = Instant::now();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), b.ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}\n{}", node.log()),
        }
    };
    let after = t0.elapsed();
    println!(
        "closed {after:?} after Redis went, {:?} before the lease would have expired there: {} {}",
        expires_at.saturating_duration_since(Instant::now()),
        u16::from(close.code),
        close.reason
    );
    assert_eq!(u16::from(close.code), 1013);
    assert!(close.reason.contains("lease lost"), "{}", close.reason);
    assert!(
        Instant::now() < expires_at,
        "closed only after the lease could expire"
    );
    // and the line is gone from the PBX before Redis could have handed the account on
    // (the test does not answer the close: the line must not wait for the browser)
    pbx.wait_users(expires_at.saturating_duration_since(Instant::now()), |u| {
        u.is_empty()
    });
    println!(
        "unregistered {:?} before",
        expires_at.saturating_duration_since(Instant::now())
    );
    let m = node.metrics().await;
    assert!(m["sipline_cluster_fenced_total"] >= 1.0, "{m:?}");
    assert!(m["sipline_cluster_renew_failures_total"] >= 1.0, "{m:?}");
    assert_eq!(m["sipline_cluster_redis_up"], 0.0);
    // newcomers are refused clearly while Redis is away, admitted once it is back
    let mut refused = Browser::connect(&node.ws_url()).await;
    let first = refused.wait_for("registrationStateChanged", |_| true, WAIT).await;
    assert_eq!(first["state"], "connectionLimit");
    assert_eq!(node.get("/readyz").await.0, 503);
    redis.launch();
    let (_again, _) = admitted(&node.ws_url(), Instant::now() + Duration::from_secs(15)).await;
    assert!(node.metrics().await["sipline_refused_total{limit=\"pool_unavailable\"}"] >= 1.0);
    assert_eq!(redis.leases().len(), 1);
    // a drained node leaves no lease (nor `:held` marker) behind when it exits
    node.signal("TERM");
    assert!(
        node.wait_exit(Duration::from_secs(20)).is_some(),
        "{}",
        node.log()
    );
    let left = redis.keys("sipline:lease:*");
    assert!(left.is_empty(), "{left:?}\n{}", node.log());
    pbx.wait_users(WAIT, |u| u.is_empty());
}
