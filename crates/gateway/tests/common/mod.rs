//! The test lab: a real Kamailio (the repo's `lab/pbx`), the real `sipline` binary, and
//! WebSocket clients that behave like browsers. Everything on 127.0.0.1; each test
//! takes its own `slot` so tests running in parallel never share a port.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Ports of one test: PBX, sipline SIP, sipline HTTP.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub pbx: u16,
    pub sip: u16,
    pub http: u16,
}

impl Slot {
    pub fn new(n: u16) -> Slot {
        Slot {
            pbx: 16000 + n * 10,
            sip: 16002 + n * 10,
            http: 18000 + n,
        }
    }
}

/// A running lab Kamailio.
pub struct Pbx {
    child: Option<Child>,
    pub port: u16,
    /// Its TLS listener, if it has one.
    pub tls_port: Option<u16>,
    run_dir: tempfile::TempDir,
}

impl Pbx {
    pub fn start(port: u16) -> Pbx {
        Pbx::start_with_tls(port, None)
    }

    /// With a TLS listener on `tls_port` as well (certificate from a lab CA: [`Pbx::tls_ca`]).
    pub fn start_tls(port: u16, tls_port: u16) -> Pbx {
        Pbx::start_with_tls(port, Some(tls_port))
    }

    fn start_with_tls(port: u16, tls_port: Option<u16>) -> Pbx {
        let run_dir = tempfile::tempdir().unwrap();
        let mut pbx = Pbx {
            child: None,
            port,
            tls_port,
            run_dir,
        };
        pbx.launch();
        pbx
    }

    /// The CA file a TLS client must trust to verify this PBX.
    pub fn tls_ca(&self) -> PathBuf {
        self.run_dir.path().join("tls/ca.pem")
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.run_dir.path().join("kamailio.log")).unwrap();
        let mut cmd = Command::new(repo_root().join("lab/pbx/kamailio.sh"));
        if let Some(p) = self.tls_port {
            cmd.env("LAB_TLS_PORT", p.to_string());
        }
        let child = cmd
            .arg(self.run_dir.path())
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start kamailio (is it installed? run lab/install.sh)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sip_ping(self.port) {
            assert!(
                Instant::now() < deadline,
                "kamailio did not answer OPTIONS:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops Kamailio (its registrations are lost with it).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Kills Kamailio as a crash would (SIGKILL, its children first: it forks), with
    /// no chance to tidy up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id().to_string();
            let _ = Command::new("pkill").args(["-KILL", "-P", &pid]).status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts Kamailio again after [`Pbx::kill9`] (its location table starts empty).
    pub fn start_again(&mut self) {
        self.launch();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.run_dir.path().join("kamailio.log")).unwrap_or_default()
    }

    /// The AoRs (user names) in Kamailio's location table, from `kamcmd ul.dump`.
    pub fn registered_users(&self) -> Vec<String> {
        let out = Command::new("kamcmd")
            .arg("-s")
            .arg(format!("unix:{}/kamailio_ctl", self.run_dir.path().display()))
            .arg("ul.dump")
            .output()
            .expect("kamcmd");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut users: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("AoR: "))
            .map(|s| s.trim().to_owned())
            .collect();
        users.sort();
        users
    }

    /// The full `ul.dump` text.
    pub fn dump(&self) -> String {
        let out = Command::new("kamcmd")
            .arg("-s")
            .arg(format!("unix:{}/kamailio_ctl", self.run_dir.path().display()))
            .arg("ul.dump")
            .output()
            .expect("kamcmd");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `pred(users)` holds; returns how long it took.
    pub fn wait_users(&self, timeout: Duration, pred: impl Fn(&[String]) -> bool) -> Duration {
        let t0 = Instant::now();
        loop {
            let users = self.registered_users();
            if pred(&users) {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < timeout,
                "timed out waiting on Kamailio's location table: {users:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Pbx {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- kamailio log (last lines) ----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Sends an OPTIONS and reports whether a 200 came back within 200 ms.
pub fn sip_ping(port: u16) -> bool {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let lp = s.local_addr().unwrap().port();
    let tag: u32 = fastrand::u32(..);
    let msg = format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bK{tag}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag={tag}\r\nTo: <sip:127.0.0.1>\r\n\
         Call-ID: probe{tag}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    if s.send_to(msg.as_bytes(), ("127.0.0.1", port)).is_err() {
        return false;
    }
    let mut buf = [0u8; 4096];
    matches!(s.recv(&mut buf), Ok(n) if buf[..n].starts_with(b"SIP/2.0 200"))
}

/// A running `sipline` binary.
pub struct Sipline {
    child: Child,
    pub http: SocketAddr,
    pub sip_port: u16,
    dir: tempfile::TempDir,
}

/// A config for `slot` with `extra` TOML appended to the [sip] section... or replacing
/// sections: `extra` is appended verbatim after the base `[http]` and `[sip]` keys.
pub fn base_config(slot: Slot) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\n\n[sip]\nlisten = \"127.0.0.1:{sip}\"\nregistrar = \"sip:127.0.0.1:{pbx}\"\n",
        http = slot.http,
        sip = slot.sip,
        pbx = slot.pbx
    )
}

/// `config` with resuming off (`http.resume_window = 0`): a browser that vanishes ends
/// its session at once, as these tests expect.
pub fn no_resume(config: &str) -> String {
    config.replacen("[http]\n", "[http]\nresume_window = 0\n", 1)
}

impl Sipline {
    /// Starts sipline with this config text and waits until it serves HTTP.
    pub fn start(config: &str) -> Sipline {
        Sipline::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Sipline {
        Sipline::start_wrapped(config, env, &[])
    }

    /// Starts sipline with the descriptor limits many systems give a service by
    /// default (soft 1024, hard 4096), through util-linux's prlimit.
    pub fn start_with_1024_descriptors(config: &str) -> Sipline {
        Sipline::start_wrapped(config, &[], &["prlimit", "--nofile=1024:4096", "--"])
    }

    /// Starts sipline as the last argument of `wrapper` (a command such as prlimit).
    pub fn start_wrapped(config: &str, env: &[(&str, &str)], wrapper: &[&str]) -> Sipline {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sipline.toml");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(config.as_bytes())
            .unwrap();
        let parsed: toml::Table = config.parse().unwrap();
        let http: SocketAddr = parsed["http"]["listen"].as_str().unwrap().parse().unwrap();
        let sip_port = parsed["sip"]["listen"]
            .as_str()
            .unwrap()
            .parse::<SocketAddr>()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("sipline.log")).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_sipline"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_sipline")),
        };
        cmd.arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let mut s = Sipline {
            child,
            http,
            sip_port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(http).is_err() {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("sipline exited ({status}):\n{}", s.log());
            }
            assert!(Instant::now() < deadline, "sipline did not start:\n{}", s.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// Starts sipline exactly as the README's run command does: no configuration file.
    pub fn start_default() -> Sipline {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("sipline.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sipline"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut s = Sipline {
            child,
            http: "127.0.0.1:8080".parse().unwrap(),
            sip_port: 5090,
            dir,
        };
        s.wait_http();
        s
    }

    fn wait_http(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(self.http).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sipline exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sipline did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sipline.log")).unwrap_or_default()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/v1/ws", self.http)
    }

    /// `/metrics` as name → value.
    pub async fn metrics(&self) -> HashMap<String, f64> {
        let mut stream = TcpStream::connect(self.http).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", self.http).as_bytes())
            .await
            .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).await.unwrap();
        body.lines()
            .filter(|l| l.starts_with("sipline_"))
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_owned(), v.trim().parse().ok()?))
            })
            .collect()
    }

    /// Waits until the metrics satisfy `pred`.
    pub async fn wait_metrics(&self, timeout: Duration, pred: impl Fn(&HashMap<String, f64>) -> bool) {
        let t0 = Instant::now();
        loop {
            let m = self.metrics().await;
            if pred(&m) {
                return;
            }
            assert!(t0.elapsed() < timeout, "metrics never settled: {m:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends the process a signal ("TERM", "INT", "KILL"…).
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// GET `path` with HTTP/1.0: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(self.http).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.http).as_bytes())
            .await
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// The gateway's process id (prlimit execs it, so it is the child's own).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Descriptors the gateway holds now.
    pub fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Size of the log so far, in bytes.
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(self.dir.path().join("sipline.log"))
            .map(|m| m.len())
            .unwrap_or(0)
    }
}

impl Drop for Sipline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- sipline log ----\n{}", self.log());
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client that behaves like the browser page.
pub struct Browser {
    pub ws: Ws,
    next_id: u64,
}

pub const WAIT: Duration = Duration::from_secs(10);

/// How long a headless Chromium may take to start and load the page under CI load.
pub const BROWSER_START: Duration = Duration::from_secs(40);

impl Browser {
    pub async fn connect(url: &str) -> Browser {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("WebSocket connect");
        Browser { ws, next_id: 1 }
    }

    /// The next JSON frame (answering pings along the way, as a browser does).
    pub async fn next(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()??;
            match frame {
                Ok(Message::Text(t)) => {
                    return Some(serde_json::from_str(t.as_str()).expect("server sent JSON"));
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Skips frames until a notification `method` whose params satisfy `pred`.
    pub async fn wait_for(
        &mut self,
        method: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(v) if v["method"] == method && pred(&v["params"]) => {
                    return v["params"].clone();
                }
                Some(_) => continue,
                None => panic!("no {method} matching within {timeout:?}"),
            }
        }
    }

    /// Waits for `phoneLineStateChanged` with this state.
    pub async fn wait_line(&mut self, state: &str, timeout: Duration) -> Value {
        self.wait_for("phoneLineStateChanged", |p| p["state"] == state, timeout)
            .await
    }

    /// Connects and waits for admission and registration; returns (browser, user).
    pub async fn registered(url: &str) -> (Browser, String) {
        let mut b = Browser::connect(url).await;
        b.wait_for("registrationStateChanged", |p| p["state"] == "accepted", WAIT)
            .await;
        let user = b.wait_for("sipUserNameReceived", |_| true, WAIT).await["user"]
            .as_str()
            .unwrap()
            .to_owned();
        b.wait_line("registered", WAIT).await;
        (b, user)
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    /// Sends a request and returns its response frame (skipping notifications).
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let frame = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_text(&frame.to_string()).await;
        self.response_to(json!(id)).await
    }

    pub async fn response_to(&mut self, id: Value) -> Value {
        loop {
            let v = self.next(WAIT).await.expect("response");
            if v.get("id") == Some(&id) {
                return v;
            }
        }
    }

    /// Clean close with a close frame.
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: 1000u16.into(),
                reason: "bye".into(),
            }))
            .await;
        // drain until the server's close arrives
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while self.ws.next().await.is_some() {}
        })
        .await;
    }

    /// Vanishes with a TCP reset: no close frame.
    #[allow(deprecated)]
    pub fn reset(self) {
        if let MaybeTlsStream::Plain(s) = self.ws.get_ref() {
            s.set_linger(Some(Duration::ZERO)).unwrap();
        }
        drop(self);
    }
}

/// A sipp far end run through `lab/sipp/run.sh` (its output goes to a temp dir).
pub struct Sipp {
    child: Child,
    pub out: tempfile::TempDir,
    pub name: String,
}

impl Sipp {
    /// Starts `scenario` with sipp's own SIP port and media port (it also uses the
    /// media port + 1 and + 2).
    pub fn spawn(scenario: &str, pbx_port: u16, sip_port: u16, media_port: u16, args: &[&str]) -> Sipp {
        Sipp::spawn_with_env(scenario, pbx_port, sip_port, media_port, args, &[])
    }

    /// As [`Sipp::spawn`], with run.sh environment settings (SIPP_ECHO=0…).
    pub fn spawn_with_env(
        scenario: &str,
        pbx_port: u16,
        sip_port: u16,
        media_port: u16,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Sipp {
        let out = tempfile::tempdir().unwrap();
        let child = Command::new(repo_root().join("lab/sipp/run.sh"))
            .envs(env.iter().copied())
            .arg(scenario)
            .arg(out.path())
            .arg(pbx_port.to_string())
            .arg(sip_port.to_string())
            .arg(media_port.to_string())
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("sipp (run lab/install.sh)");
        // run.sh names its files after the scenario's file name, whatever path it was given
        let base = Path::new(scenario)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(scenario);
        Sipp {
            child,
            out,
            name: format!("{base}-{sip_port}"),
        }
    }

    /// Registers `user` from `sip_port` so a UAS started there afterwards gets its calls.
    pub fn register(pbx_port: u16, sip_port: u16, media_port: u16, user: &str, password: &str) {
        let mut s = Sipp::spawn(
            "register",
            pbx_port,
            sip_port,
            media_port,
            &["-s", user, "-ap", password],
        );
        let rc = s.wait(Duration::from_secs(10));
        assert_eq!(rc, Some(0), "sipp register failed:\n{}", s.messages());
    }

    /// Waits for sipp to exit; its exit code (0: every call as scripted), or None on timeout.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if t0.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn wait_async(&mut self, timeout: Duration) -> Option<i32> {
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if t0.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every SIP message sipp sent and received.
    pub fn messages(&self) -> String {
        std::fs::read_to_string(self.out.path().join(format!("{}.msgs", self.name))).unwrap_or_default()
    }

    /// What sipp reported as unexpected or failed (-trace_err).
    pub fn errors(&self) -> String {
        std::fs::read_to_string(self.out.path().join(format!("{}.errors", self.name))).unwrap_or_default()
    }

    /// How many messages sipp received whose first line starts with `start_line`
    /// (e.g. "BYE ", "SIP/2.0 487").
    pub fn received(&self, start_line: &str) -> usize {
        let msgs = self.messages();
        msgs.split("message received")
            .skip(1)
            .filter(|m| {
                m.lines()
                    .skip(1)
                    .find(|l| !l.trim().is_empty())
                    .is_some_and(|l| l.starts_with(start_line))
            })
            .count()
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- sipp {} messages ----\n{}", self.name, self.messages());
        }
    }
}

/// A call's notifications: waits for `callStateChanged` with `state`, failing on any
/// other final state on the way.
/// A pause between a call's answer and hanging it up: Kamailio's workers can pass a BYE
/// sent hard on our ACK's heels ahead of it, and a sipp far end's scenario then fails on
/// the order. Tests that check sipp's exit call this before `hangUp`.
pub async fn let_the_ack_through() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

pub async fn wait_call_state(b: &mut Browser, state: &str, timeout: Duration) -> Value {
    const FINAL: [&str; 6] = ["busy", "rejected", "cancelled", "noAnswer", "completed", "failed"];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let v = b
            .next(left)
            .await
            .unwrap_or_else(|| panic!("no callStateChanged {state} within {timeout:?}"));
        if v["method"] != "callStateChanged" {
            continue;
        }
        let s = v["params"]["state"].as_str().unwrap_or_default().to_owned();
        if s == state {
            return v["params"].clone();
        }
        assert!(
            !FINAL.contains(&s.as_str()),
            "call ended {s} while waiting for {state}: {v}"
        );
    }
}

/// A baresip far end (lab/phones/phone.sh), stopped when dropped.
pub struct Phone {
    pub dir: tempfile::TempDir,
}

impl Phone {
    /// Registers `user` and answers calls automatically (`answer` = "auto") or rings
    /// (`"manual"`); `dial` makes it call that number at start.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        user: &str,
        pass: &str,
        sip_port: u16,
        pbx_port: u16,
        rtp: (u16, u16),
        answer: &str,
        dial: Option<&str>,
    ) -> Phone {
        Phone::start_with_env(user, pass, sip_port, pbx_port, rtp, answer, dial, 0, &[])
    }

    /// As [`Phone::start`], with phone.sh environment settings (BS_CODECS, BS_TONE…).
    #[allow(clippy::too_many_arguments)]
    pub fn start_with_env(
        user: &str,
        pass: &str,
        sip_port: u16,
        pbx_port: u16,
        rtp: (u16, u16),
        answer: &str,
        dial: Option<&str>,
        ctrl_port: u16,
        env: &[(&str, &str)],
    ) -> Phone {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(repo_root().join("lab/phones/phone.sh"));
        cmd.envs(env.iter().copied());
        cmd.arg("start")
            .arg(dir.path())
            .args([user, pass])
            .arg(sip_port.to_string())
            .arg(pbx_port.to_string())
            .arg(format!("{}-{}", rtp.0, rtp.1))
            .arg(answer)
            .arg(ctrl_port.to_string())
            .arg("udp");
        if let Some(d) = dial {
            cmd.arg(d);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .expect("baresip (run lab/install.sh)");
        let phone = Phone { dir };
        assert!(
            out.status.success(),
            "baresip did not start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            phone.log()
        );
        phone
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default()
    }

    /// Kills baresip as a crash would (SIGKILL): no BYE, no unregistration.
    pub fn kill9(&self) {
        let pid = std::fs::read_to_string(self.dir.path().join("baresip.pid")).unwrap_or_default();
        let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
    }

    /// Sends a ctrl_tcp command (hold, resume, hangup…) to a phone started with a ctrl port.
    pub fn ctrl(port: u16, command: &[&str]) -> bool {
        Command::new(repo_root().join("lab/phones/ctrl.py"))
            .arg(port.to_string())
            .args(command)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Waits until the log shows `what` (registered, incoming, established, closed, or a regex).
    pub async fn wait(&self, what: &str, timeout_secs: u64) -> bool {
        self.wait_count(what, timeout_secs, 1).await
    }

    /// Waits until the log shows `what` `count` times (the log holds every call's lines).
    pub async fn wait_count(&self, what: &str, timeout_secs: u64, count: u32) -> bool {
        let dir = self.dir.path().to_owned();
        let what = what.to_owned();
        tokio::task::spawn_blocking(move || {
            Command::new(repo_root().join("lab/phones/phone.sh"))
                .arg("wait")
                .arg(&dir)
                .arg(&what)
                .arg(timeout_secs.max(1).to_string())
                .arg(count.to_string())
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .await
        .unwrap_or(false)
    }

    /// The newest recording of what baresip received.
    pub fn last_recording(&self) -> Option<PathBuf> {
        let out = Command::new(repo_root().join("lab/phones/phone.sh"))
            .arg("last")
            .arg(self.dir.path())
            .output()
            .ok()?;
        let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (!p.is_empty()).then(|| PathBuf::from(p))
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("lab/phones/phone.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if std::thread::panicking() {
            eprintln!("---- baresip log ----\n{}", self.log());
        }
    }
}

/// Browser tests run Chromium, which must not reach any network but loopback: they
/// run inside a private network namespace with only `lo` (they need root for that).
pub mod netns {
    use std::process::Command;

    /// True when no interface but `lo` is up in this process's network namespace.
    pub fn inside() -> bool {
        let Ok(out) = Command::new("ip").args(["-o", "link", "show", "up"]).output() else {
            return false;
        };
        String::from_utf8_lossy(&out.stdout).lines().all(|l| {
            l.split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or("") == "lo")
                .unwrap_or(true)
        })
    }

    /// How many browser tests may run at once (each runs a Chromium; more than this on
    /// two cores and audio timing suffers).
    const BROWSER_SLOTS: usize = 2;

    /// Holds one of the machine-wide browser slots (a locked file) until dropped.
    fn browser_slot() -> std::fs::File {
        loop {
            for i in 0..BROWSER_SLOTS {
                let path = std::env::temp_dir().join(format!("sipline-browser-slot-{i}.lock"));
                if let Ok(f) = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    && f.try_lock().is_ok()
                {
                    return f;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Runs the test `name` of this test binary again, inside a fresh loopback-only
    /// namespace, and asserts that it passed.
    pub fn rerun(name: &str) {
        let _slot = browser_slot();
        let exe = std::env::current_exe().expect("test binary");
        let status = Command::new("unshare")
            .args(["-n", "--", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
            .arg(exe)
            .args([name, "--exact", "--nocapture", "--test-threads", "1"])
            .status()
            .expect("unshare (util-linux) to start; browser tests need root for a network namespace");
        assert!(
            status.success(),
            "{name} failed inside its network namespace ({status})"
        );
    }
}

/// Runs a script of `tests/browser/` with node; returns its exit code, its output and
/// the JSON of its `@result` line.
pub async fn run_browser_script(
    script: &str,
    env: &[(&str, String)],
    timeout: Duration,
) -> (Option<i32>, String, Option<Value>) {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(repo_root().join("tests/browser").join(script))
        .current_dir(repo_root().join("tests/browser"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("node (installed by lab/install.sh)");
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => panic!("node failed: {e}"),
        Err(_) => return (None, "timed out".into(), None),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let result = text
        .lines()
        .find_map(|l| l.strip_prefix("@result "))
        .and_then(|j| serde_json::from_str(j).ok());
    (out.status.code(), text, result)
}

/// Reads a mono 16-bit PCM WAV file: (sample rate, samples). A file still being written
/// (its data length not filled in yet) is read to its end.
pub fn read_wav(path: &Path) -> (u32, Vec<i16>) {
    let data = std::fs::read(path).expect("wav");
    if data.len() < 28 {
        return (8000, Vec::new());
    }
    let rate = u32::from_le_bytes(data[24..28].try_into().unwrap());
    // find the "data" chunk
    let mut i = 12;
    while i + 8 <= data.len() {
        let id = &data[i..i + 4];
        let len = u32::from_le_bytes(data[i + 4..i + 8].try_into().unwrap()) as usize;
        if id == b"data" {
            let end = match len {
                0 => data.len(),
                len => (i + 8 + len).min(data.len()),
            };
            let samples = data[i + 8..end]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            return (rate, samples);
        }
        i += 8 + len;
    }
    (rate, Vec::new())
}

/// The RMS amplitude of `samples`, 0..1.
pub fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    (sum / samples.len().max(1) as f64).sqrt() / 32768.0
}

/// Power of `hz` against everything else, in dB (Goertzel over 20 ms blocks, summed).
pub fn tone_snr_db(samples: &[i16], rate: u32, hz: f64) -> f64 {
    let n = (rate / 50) as usize;
    let (mut tone, mut rest) = (0.0f64, 0.0f64);
    for block in samples.chunks_exact(n) {
        let k = (n as f64 * hz / f64::from(rate)).round();
        let w = 2.0 * std::f64::consts::PI * k / n as f64;
        let c = 2.0 * w.cos();
        let (mut s1, mut s2, mut total) = (0.0f64, 0.0f64, 0.0f64);
        for x in block {
            let x = f64::from(*x);
            total += x * x;
            let s0 = x + c * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let t = (s1 * s1 + s2 * s2 - c * s1 * s2) * 2.0 / n as f64;
        tone += t;
        rest += (total - t).max(0.0);
    }
    10.0 * (tone / rest.max(1e-9)).log10()
}
