//! Issue 5 in a real browser: the phone page (`web/`) and sipline.js, driven by Playwright
//! scripts in `tests/browser/` that click the page like a person, against the real lab:
//! Kamailio, the sipline binary, sipp and baresip far ends. Each test starts its lab here,
//! runs `node tests/browser/<scenario>.mjs` with the sipline URL in `SIPLINE_URL`, reacts to
//! the script's `@event` lines (placing calls, answering, freeing accounts), and asserts the
//! script's exit code and what the far ends saw (DTMF, hold and audio are checked there
//! whenever the gateway accepts them).
//!
//! Chromium only ever runs in a network namespace that has nothing but loopback: a test
//! that finds itself outside one runs itself again inside `unshare -n` (root needed), and
//! the scripts refuse to launch Chromium otherwise.
//!
//! Needs: `apt-get install chromium`, `npm ci --prefix tests/browser`, and the lab
//! (`lab/install.sh`: Kamailio, sipp, baresip, sox).
//! `SCREENSHOTS=docs/screenshots` (relative to the repository root) makes the scripts save
//! the README screenshots.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Longest run of one browser scenario.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// One browser at a time: Chromium is heavy for the 2 cores CI has.
static BROWSER: Mutex<()> = Mutex::new(());

fn one_browser_at_a_time() -> MutexGuard<'static, ()> {
    BROWSER.lock().unwrap_or_else(|p| p.into_inner())
}

fn browser_dir() -> PathBuf {
    repo_root().join("tests/browser")
}

/// The network interfaces that are up besides `lo`, in this process's namespace.
fn interfaces_up() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "up"])
        .output()
        .expect("ip (iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|name| name.trim().split('@').next().unwrap_or("").to_owned())
        .filter(|name| !name.is_empty() && name != "lo")
        .collect()
}

/// Runs test `name` again in a fresh loopback-only network namespace unless this process
/// already is in one. Returns true when it did (the caller then has nothing left to do).
fn isolated(name: &str) -> bool {
    let up = interfaces_up();
    if up.is_empty() {
        return false;
    }
    assert!(
        std::env::var_os("WEBPHONE_NETNS").is_none(),
        "interfaces {up:?} are up inside the namespace made for the browser"
    );
    let _one = one_browser_at_a_time();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(&exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("WEBPHONE_NETNS", "1")
        .stdin(Stdio::null())
        .output()
        .expect("unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        !stderr.contains("unshare failed"),
        "the browser tests run Chromium only in a loopback-only network namespace, and \
         `unshare -n` is not permitted here: run them as root, or inside \
         `unshare -n sh -c 'ip link set lo up && cargo test -p sipline --test webphone'`"
    );
    assert!(
        out.status.success(),
        "{name} failed in its network namespace ({})",
        out.status
    );
    assert!(
        stdout.contains("1 passed"),
        "{name} did not run in its network namespace"
    );
    true
}

/// Chromium and playwright-core are installed, or the test says how to get them.
fn prerequisites() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        PathBuf::from(&chromium).exists(),
        "{chromium} is missing: apt-get install -y chromium"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "playwright-core is missing: npm ci --prefix tests/browser"
    );
}

/// Kamailio and sipline on the ports of `slot` (60..=69).
struct Lab {
    slot: Slot,
    pbx: Pbx,
    sipline: Sipline,
}

impl Lab {
    /// With accounts 880..=`last_account`.
    fn start(n: u16, last_account: u16) -> Lab {
        Lab::with_pool(n, &format!("range = {{ from = 880, to = {last_account} }}\n"))
    }

    /// With `pool` as the body of the [pool] section (after its domain).
    fn with_pool(n: u16, pool: &str) -> Lab {
        Lab::with_config(n, pool, "")
    }

    /// … and `http` as extra keys of the [http] section.
    fn with_config(n: u16, pool: &str, http: &str) -> Lab {
        assert!(
            (60..=69).contains(&n) || (150..=159).contains(&n),
            "the webphone tests own slots 60..=69 and 150..=159"
        );
        prerequisites();
        let slot = Slot::new(n);
        let pbx = Pbx::start(slot.pbx);
        let rtp = 40000 + n * 20;
        let config = base_config(slot).replacen("[http]\n", &format!("[http]\n{http}"), 1)
            + &format!(
                "\n[pool]\ndomain = \"127.0.0.1\"\n{pool}\n[media]\nrtp_ports = \"{rtp}-{}\"\n",
                rtp + 19
            );
        let sipline = Sipline::start(&config);
        Lab { slot, pbx, sipline }
    }

    /// The page's URL.
    fn url(&self) -> String {
        format!("http://{}/", self.sipline.http)
    }

    /// sipp's SIP port and media port for far end `i` (as in calls.rs).
    fn far(&self, i: u16) -> (u16, u16) {
        (
            self.slot.pbx + 5 + i * 2,
            30000 + self.slot.http % 1000 * 10 + i * 4,
        )
    }

    /// A sipp far end registered as `user`, running `scenario` (a lab/sipp name, or a
    /// file of tests/browser/sipp).
    fn uas(&self, scenario: &str, user: &str, args: &[&str]) -> Sipp {
        let (sip, media) = self.far(0);
        Sipp::register(self.slot.pbx, sip, media, user, "secret");
        let mut all = vec!["-s", user];
        all.extend_from_slice(args);
        Sipp::spawn(&sipp_scenario(scenario), self.slot.pbx, sip, media, &all)
    }

    /// A sipp caller (lab user 1000) calling `callee`.
    fn uac(&self, i: u16, scenario: &str, callee: &str, args: &[&str]) -> Sipp {
        self.uac_as(i, scenario, callee, "1000", args)
    }

    /// A sipp caller, lab user `caller` (1000 to 1003), calling `callee`.
    fn uac_as(&self, i: u16, scenario: &str, callee: &str, caller: &str, args: &[&str]) -> Sipp {
        let (sip, media) = self.far(i);
        let mut all = vec![
            "-s", callee, "-key", "caller", caller, "-au", caller, "-ap", "secret",
        ];
        all.extend_from_slice(args);
        Sipp::spawn(&sipp_scenario(scenario), self.slot.pbx, sip, media, &all)
    }
}

/// Our own scenarios live in tests/browser/sipp; the lab's are named.
fn sipp_scenario(name: &str) -> String {
    let ours = browser_dir().join("sipp").join(format!("{name}.xml"));
    if ours.exists() {
        ours.display().to_string()
    } else {
        name.to_owned()
    }
}

/// A browser scenario: `node tests/browser/<script>`, its `@event` lines and its output.
struct Script {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<String>,
    output: Arc<Mutex<String>>,
    started: Instant,
}

impl Script {
    fn start(script: &str, lab: &Lab, env: &[(&str, &str)]) -> Script {
        let mut cmd = Command::new("node");
        cmd.arg(browser_dir().join(script))
            .current_dir(repo_root())
            .env("SIPLINE_URL", lab.url())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = std::env::var_os("SCREENSHOTS") {
            cmd.env("SCREENSHOTS", repo_root().join(dir));
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("node (is Node.js installed?)");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, events) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for (stream, tx) in [
            (Box::new(out) as Box<dyn std::io::Read + Send>, Some(tx)),
            (Box::new(err), None),
        ] {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().unwrap().push_str(&format!("{line}\n"));
                    if let (Some(tx), Some(ev)) = (&tx, line.strip_prefix('@')) {
                        let _ = tx.send(ev.to_owned());
                    }
                }
            });
        }
        Script {
            name: script.to_owned(),
            stdin: child.stdin.take(),
            child,
            events,
            output,
            started: Instant::now(),
        }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits for the line `@name data`; returns `data`.
    fn event(&mut self, name: &str) -> String {
        loop {
            let left = SCRIPT_TIMEOUT.saturating_sub(self.started.elapsed());
            match self.events.recv_timeout(left) {
                Ok(line) => {
                    let (ev, data) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                    if ev == name {
                        return data.trim().to_owned();
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("{}: no @{name} in time", self.name),
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.child.wait();
                    std::thread::sleep(Duration::from_millis(100)); // the readers' last lines
                    panic!("{}: ended before @{name}", self.name)
                }
            }
        }
    }

    /// Tells the script to go on.
    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the script to end and asserts that every check passed; prints its output.
    fn passes(mut self) -> String {
        drop(self.stdin.take());
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if self.started.elapsed() > SCRIPT_TIMEOUT {
                panic!("{}: still running after {SCRIPT_TIMEOUT:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        std::thread::sleep(Duration::from_millis(100)); // the readers' last lines
        let output = self.output();
        assert!(
            status.success(),
            "{} failed ({status}); its output follows",
            self.name
        );
        println!("---- {} ----\n{output}", self.name);
        output
    }

    /// SIGTERM (the script closes Chromium), SIGKILL after 5 s.
    fn stop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- {} output ----\n{}", self.name, self.output());
        }
    }
}

/// A baresip phone of the lab (`lab/phones/phone.sh`) as far end `i`: it rings until
/// told to answer (`manual`), logs the DTMF it receives, and is stopped when dropped.
struct Phone {
    dir: tempfile::TempDir,
    ctrl: u16,
}

impl Phone {
    fn start(lab: &Lab, i: u16, user: &str) -> Phone {
        Phone::with_answer(lab, i, user, "manual")
    }

    /// One that answers at once (`auto`).
    fn answering(lab: &Lab, i: u16, user: &str) -> Phone {
        Phone::with_answer(lab, i, user, "auto")
    }

    fn with_answer(lab: &Lab, i: u16, user: &str, answer: &str) -> Phone {
        let (sip, media) = lab.far(i);
        let ctrl = lab.slot.pbx + 9;
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(repo_root().join("lab/phones/phone.sh"))
            .arg("start")
            .arg(dir.path())
            .args([user, "secret", &sip.to_string(), &lab.slot.pbx.to_string()])
            .args([
                &format!("{media}-{}", media + 3),
                answer,
                &ctrl.to_string(),
                "udp",
            ])
            .env("BS_LIFETIME", "300")
            .stdin(Stdio::null())
            .output()
            .expect("baresip (run lab/install.sh)");
        assert!(
            out.status.success(),
            "baresip did not register: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Phone { dir, ctrl }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default()
    }

    /// Sends a ctrl_tcp command (`accept`, `hangup`...).
    fn ctrl(&self, command: &str) {
        let out = Command::new("python3")
            .arg(repo_root().join("lab/phones/ctrl.py"))
            .args([&self.ctrl.to_string(), command])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "ctrl.py {command}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            self.log()
        );
    }

    /// Waits until the log contains `text`.
    fn wait_log(&self, text: &str, timeout: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if self.log().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// What baresip has received so far in its current (or last) call: (rate, samples).
    /// baresip writes a sample only for audio that reached it, so the length grows with
    /// what arrives, not with the clock.
    fn received(&self) -> (u32, Vec<i16>) {
        let rec = std::fs::read_dir(self.dir.path().join("rec")).unwrap();
        let mut decoded: Vec<PathBuf> = rec
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .collect();
        decoded.sort();
        decoded.last().map_or((8000, Vec::new()), |p| read_wav(p))
    }

    /// Whether baresip's call ended (a BYE came, or it hung up).
    fn call_ended(&self) -> bool {
        let log = self.log();
        log.contains("session closed") || log.contains("terminated (duration")
    }

    /// The RMS amplitude (0..1) of what baresip received in its last call (`sox stat`).
    fn received_rms(&self) -> Option<f64> {
        let rec = std::fs::read_dir(self.dir.path().join("rec")).ok()?;
        let mut decoded: Vec<PathBuf> = rec
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .collect();
        decoded.sort();
        let out = Command::new("sox")
            .arg(decoded.last()?)
            .args(["-n", "stat"])
            .output()
            .ok()?;
        let stat = String::from_utf8_lossy(&out.stderr);
        let line = stat.lines().find(|l| l.starts_with("RMS     amplitude:"))?;
        line.rsplit(':').next()?.trim().parse().ok()
    }

    /// The DTMF digits baresip received, in order: RFC 4733 events (`received event: '5'
    /// (end=0)`, once per key) and SIP INFO (`call: received DTMF: '5'`).
    fn dtmf(&self) -> String {
        self.log()
            .lines()
            .filter_map(|l| {
                let rest = l.split("received DTMF: '").nth(1).or_else(|| {
                    l.split("received event: '")
                        .nth(1)
                        .filter(|r| r.contains("(end=0)"))
                })?;
                rest.chars().next()
            })
            .collect()
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("lab/phones/phone.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
        if std::thread::panicking() {
            eprintln!("---- baresip log ----\n{}", self.log());
        }
    }
}

fn sipp_passes(far: &mut Sipp, what: &str) -> String {
    let rc = far.wait(Duration::from_secs(20));
    let msgs = far.messages();
    assert_eq!(rc, Some(0), "{what}: sipp {}:\n{msgs}", far.name);
    msgs
}

/// Dial 1001 on the keypad: it rings (a baresip phone, until told to answer), is
/// answered, the timer runs; DTMF by clicking keys (checked at the far end), hold and
/// resume (re-INVITEs at the far end), audio both ways; Hang up.
#[test]
fn outgoing_call_from_the_keypad() {
    if isolated("outgoing_call_from_the_keypad") {
        return;
    }
    let _one = one_browser_at_a_time();
    let lab = Lab::start(60, 881);
    let far = Phone::start(&lab, 0, "1001");
    let mut page = Script::start("outgoing.mjs", &lab, &[("CALLEE", "1001"), ("DTMF", "12#")]);
    page.event("registered");
    page.event("ringing");
    assert!(far.wait_log("Incoming call from", WAIT), "the far end never rang");
    std::thread::sleep(Duration::from_millis(300));
    far.ctrl("accept");
    let dtmf: Value = serde_json::from_str(&page.event("dtmf")).unwrap();
    let hold: Value = serde_json::from_str(&page.event("hold")).unwrap();
    let hungup: Value = serde_json::from_str(&page.event("hungup")).unwrap();
    assert!(
        far.wait_log("session closed", WAIT) || far.wait_log("terminated (duration", WAIT),
        "the far end saw no hang-up"
    );
    page.passes();

    // DTMF: the keys clicked reach the far end as digits
    assert_eq!(dtmf["accepted"], true, "the gateway refused DTMF: {dtmf}");
    let t0 = Instant::now();
    while far.dtmf().len() < 3 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(far.dtmf(), "12#", "the DTMF the far end received");
    // hold: a re-INVITE put the far end on hold and another took it back
    assert_eq!(hold["accepted"], true, "the gateway refused hold: {hold}");
    assert!(
        far.log().matches("stream: update 'audio'").count() >= 3,
        "the far end saw no re-INVITEs for hold/resume"
    );
    // audio both ways: the browser's (fake) microphone at the far end, and the far end's
    // tone in the page
    assert_eq!(hungup["media"], "connected", "no audio leg: {hungup}");
    let rms = far.received_rms();
    println!(
        "the far end heard the browser at RMS {rms:?}; the page heard {}",
        hungup["heard"]
    );
    assert!(
        rms.is_some_and(|r| r > 0.01),
        "the far end heard nothing from the browser: RMS {rms:?}"
    );
    assert!(
        hungup["heard"].as_f64().is_some_and(|r| r > 0.01),
        "the page heard nothing from the far end: {hungup}"
    );
    // the page's line went away with the page; the far end's stays
    lab.pbx.wait_users(WAIT, |u| u == ["1001"]);
}

/// The far end refuses hold (488 to the re-INVITE): the page says so, stays "In call"
/// and never shows "On hold" (sipline answers `hold` only once the far end has).
#[test]
fn a_refused_hold_never_shows_on_hold() {
    if isolated("a_refused_hold_never_shows_on_hold") {
        return;
    }
    let _one = one_browser_at_a_time();
    let lab = Lab::start(65, 881);
    let mut far = lab.uas("uas_refuse_reinvite", "1001", &[]);
    let mut page = Script::start("hold.mjs", &lab, &[("CALLEE", "1001")]);
    page.event("registered");
    let refused = page.event("refused");
    assert!(refused.contains("488"), "{refused}");
    page.passes();
    let msgs = sipp_passes(&mut far, "the far end (refused the hold, then BYE)");
    assert!(msgs.contains("SIP/2.0 488"), "{msgs}");
}

/// A named caller rings the page: it shows the caller, Answer; the caller hangs up. A
/// second call is declined with Escape alone.
#[test]
fn incoming_call_answered_then_declined_from_the_keyboard() {
    if isolated("incoming_call_answered_then_declined_from_the_keyboard") {
        return;
    }
    let _one = one_browser_at_a_time();
    let lab = Lab::start(61, 881);
    let mut page = Script::start("incoming.mjs", &lab, &[("CALLER_NAME", "Alice Martin")]);
    let user = page.event("registered");
    assert!(["880", "881"].contains(&user.as_str()), "registered as {user:?}");

    let mut caller = lab.uac(0, "uac_named_call_then_bye", &user, &["-d", "3000"]);
    let msgs = sipp_passes(&mut caller, "the caller (answered, then hangs up)");
    assert_eq!(caller.received("SIP/2.0 180"), 1, "the page rang:\n{msgs}");
    page.send("ended");

    page.event("second");
    let mut caller = lab.uac(1, "uac_call_expect_reject", &user, &[]);
    let msgs = sipp_passes(&mut caller, "the second caller (declined)");
    assert_eq!(caller.received("SIP/2.0 603"), 1, "declined with 603:\n{msgs}");
    page.passes();
}

/// Every account is in use: the page shows the connection-limit message, does not
/// hammer sipline, and gets a line with "Try again now" once one is free.
#[test]
fn connection_limit_then_try_again() {
    if isolated("connection_limit_then_try_again") {
        return;
    }
    let _one = one_browser_at_a_time();
    let lab = Lab::start(62, 880);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (other, user) = rt.block_on(Browser::registered(&lab.sipline.ws_url()));
    assert_eq!(user, "880");
    let mut page = Script::start("limit.mjs", &lab, &[]);
    page.event("limit");
    rt.block_on(async {
        other.close().await;
        lab.sipline
            .wait_metrics(WAIT, |m| m["sipline_pool_leased"] == 0.0)
            .await;
    });
    page.send("free");
    page.passes();
    // the page's line went away with the page
    lab.pbx.wait_users(WAIT, |u| u.is_empty());
}

/// The microphone refused, then absent: the page explains, and still registers.
#[test]
fn microphone_refused_or_absent() {
    if isolated("microphone_refused_or_absent") {
        return;
    }
    let _one = one_browser_at_a_time();
    let lab = Lab::start(63, 881);
    Script::start("mic.mjs", &lab, &[]).passes();
}

/// docs/client.md's example, exactly as written, places and ends a call.
#[test]
fn client_doc_example_works_as_written() {
    if isolated("client_doc_example_works_as_written") {
        return;
    }
    let _one = one_browser_at_a_time();
    let lab = Lab::start(64, 881);
    let mut far = lab.uas("uas_answer_wait_bye", "1001", &[]);
    let page = Script::start("example.mjs", &lab, &[("CALLEE", "1001")]);
    page.passes();
    let msgs = sipp_passes(&mut far, "the far end of the example's call");
    assert_eq!(far.received("BYE "), 1, "{msgs}");
}

/// The PBX refuses the line's password: the page says "Registration failed (code)".
#[test]
fn registration_failure_is_shown() {
    if isolated("registration_failure_is_shown") {
        return;
    }
    let _one = one_browser_at_a_time();
    let lab = Lab::with_pool(
        65,
        "[[pool.accounts]]\nuser = \"880\"\npassword = \"not-the-password\"\n",
    );
    Script::start("regfail.mjs", &lab, &[]).passes();
}

/// A call from the page to a baresip far end (1001, answering at once, playing 1 kHz)
/// that lives through what `script` cuts. The script says "@back" once the page hears the
/// far end again and "@restored" 3 s later: in between, the far end must have received
/// at least 2 s of the page's audio (both ways within 3 s), and its call never ended
/// until the page hangs up. Returns the script's "restored" data.
fn a_call_survives(lab: &Lab, script: &str, env: &[(&str, &str)]) -> String {
    let far = Phone::answering(lab, 0, "1001");
    let mut all = vec![("CALLEE", "1001")];
    all.extend_from_slice(env);
    let mut page = Script::start(script, lab, &all);
    page.event("registered");
    page.event("back");
    let (_, before) = far.received();
    let restored = page.event("restored");
    let (rate, after) = far.received();
    let heard = &after[before.len().min(after.len())..];
    let (secs, level) = (heard.len() as f64 / f64::from(rate), rms(heard));
    println!(
        "back: {restored}; the far end received {secs:.2} s of the page's audio at RMS {level:.3} in the next 3 s"
    );
    assert!(
        secs >= 2.0,
        "the far end got only {secs:.2} s of audio in the 3 s after the page's"
    );
    assert!(
        level > 0.01,
        "the far end's audio after the page's was silent: RMS {level}"
    );
    assert!(!far.call_ended(), "the far end's call ended:\n{}", far.log());
    page.send("hangup");
    page.passes();
    assert!(
        far.wait_log("session closed", WAIT) || far.call_ended(),
        "the far end saw no hang-up"
    );
    restored
}

/// Issue 15: the page's WebSocket is cut mid-call (TCP resets from nft on the HTTP port):
/// it says "Reconnecting…", resumes its session once the port answers again, and the
/// call goes on with audio; the far end never notices.
#[test]
fn a_websocket_cut_mid_call_is_resumed_and_the_call_goes_on() {
    if isolated("a_websocket_cut_mid_call_is_resumed_and_the_call_goes_on") {
        return;
    }
    let _one = one_browser_at_a_time();
    // pings every second: the browser's pong meets the reset at once; the call is
    // older than the resume window when it is cut (the window counts from the drop)
    let lab = Lab::with_config(
        66,
        "range = { from = 880, to = 881 }\n",
        "ws_ping_interval = 1\nresume_window = 8\n",
    );
    let port = lab.sipline.http.port().to_string();
    a_call_survives(
        &lab,
        "reconnect.mjs",
        &[("HTTP_PORT", port.as_str()), ("RESUME_WINDOW", "8")],
    );
    let log = lab.sipline.log();
    assert!(log.contains("session resumed"), "{log}");
}

/// Issue 15: a laptop lid (or a new network): the page loses its WebSocket and its audio
/// path for 15 s, and the old path never comes back (nft drops the page's ICE port for
/// good). Back on the WebSocket, the page resumes its session and brings the audio up on
/// a new path (a new peer connection when the old one gave up); the far end never notices.
#[test]
fn a_laptop_lid_cuts_everything_and_the_call_comes_back() {
    if isolated("a_laptop_lid_cuts_everything_and_the_call_comes_back") {
        return;
    }
    let _one = one_browser_at_a_time();
    let lab = Lab::with_config(
        68,
        "range = { from = 880, to = 881 }\n",
        "ws_ping_interval = 1\nresume_window = 30\n",
    );
    let port = lab.sipline.http.port().to_string();
    let restored = a_call_survives(
        &lab,
        "reconnect.mjs",
        &[
            ("HTTP_PORT", port.as_str()),
            ("AWAY_MS", "15000"),
            ("CUT_MEDIA", "1"),
        ],
    );
    let r: Value = serde_json::from_str(&restored).unwrap();
    assert_eq!(
        r["newPeerConnection"], true,
        "the old peer connection had given up: {r}"
    );
    let log = lab.sipline.log();
    assert!(log.contains("session resumed"), "{log}");
}

/// Issue 15: the page's audio path dies mid-call while the WebSocket lives (a network
/// change: nft drops every packet of the page's ICE port, and keeps dropping them): the
/// page notices its ICE checks going unanswered, restarts ICE over the WebSocket on new
/// ports, and the audio comes back both ways within 10 s; the far end never notices.
#[test]
fn an_audio_path_cut_mid_call_comes_back_by_ice_restart() {
    if isolated("an_audio_path_cut_mid_call_comes_back_by_ice_restart") {
        return;
    }
    let _one = one_browser_at_a_time();
    let lab = Lab::start(67, 881);
    let restored = a_call_survives(&lab, "netchange.mjs", &[("BACK_WITHIN_MS", "10000")]);
    let r: Value = serde_json::from_str(&restored).unwrap();
    assert!(r["offers"].as_u64().is_some_and(|n| n >= 1), "{r}");
}

/// Issue 16: a blind transfer from the page, by accessible names: "Transfer…", the
/// target on the keypad, "Transfer the call to 1002"; the far end (sipp) takes the REFER
/// and reports the new call; the page says so and ends with "Call transferred".
#[test]
fn a_blind_transfer_from_the_page() {
    if isolated("a_blind_transfer_from_the_page") {
        return;
    }
    let _one = one_browser_at_a_time();
    let lab = Lab::start(69, 881);
    let mut far = lab.uas("uas_transfer", "1001", &["-key", "final", "200 OK"]);
    let mut page = Script::start("transfer.mjs", &lab, &[("CALLEE", "1001"), ("TARGET", "1002")]);
    page.event("registered");
    page.event("transferred");
    page.passes();
    let msgs = sipp_passes(&mut far, "the far end (REFER, NOTIFYs, our BYE)");
    assert!(msgs.contains("Refer-To: <sip:1002@127.0.0.1>"), "{msgs}");
}

/// Issue 16: call waiting from the page, by accessible names: a second caller during a
/// call is shown with Answer and Decline; answering holds the first (a re-INVITE with
/// sendonly reaches it); "Switch to the call with 1000" swaps back (the second is held);
/// hanging up leaves the held call, resumed with "Resume the call".
#[test]
fn call_waiting_from_the_page() {
    if isolated("call_waiting_from_the_page") {
        return;
    }
    let _one = one_browser_at_a_time();
    let lab = Lab::start(150, 881);
    let mut page = Script::start("call_waiting.mjs", &lab, &[]);
    let user = page.event("registered");
    let mut first = lab.uac_as(0, "uac_call_wait_bye", &user, "1000", &[]);
    page.event("first");
    let mut second = lab.uac_as(1, "uac_call_wait_bye", &user, "1001", &[]);
    page.event("done");
    page.passes();
    for (far, what) in [
        (&mut first, "the first caller"),
        (&mut second, "the second caller"),
    ] {
        let msgs = sipp_passes(far, what);
        // held (sendonly) and resumed (sendrecv) by re-INVITEs, then our BYE
        assert!(msgs.contains("a=sendonly"), "{what} was put on hold:\n{msgs}");
        assert!(far.received("INVITE sip:") >= 2, "{what}:\n{msgs}");
    }
}
