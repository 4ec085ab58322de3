//! The bits of the gateway's test lab (crates/gateway/tests/common) this crate's test
//! needs, copied since tests cannot share modules across crates: a lab Kamailio, a
//! sipp far end, and the real `sipline` binary, all on 127.0.0.1.

#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Waits for a child with a bound (None when it is still running afterwards).
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let t0 = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if t0.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends an OPTIONS and reports whether a 200 came back within 200 ms.
pub fn sip_ping(port: u16) -> bool {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let lp = s.local_addr().unwrap().port();
    let tag: u32 = std::process::id() ^ lp as u32;
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

/// A running lab Kamailio (lab/pbx).
pub struct Pbx {
    child: Child,
    run_dir: tempfile::TempDir,
}

impl Pbx {
    pub fn start(port: u16) -> Pbx {
        let run_dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(run_dir.path().join("kamailio.log")).unwrap();
        let child = Command::new(repo_root().join("lab/pbx/kamailio.sh"))
            .arg(run_dir.path())
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start kamailio (is it installed? run lab/install.sh)");
        let pbx = Pbx { child, run_dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sip_ping(port) {
            assert!(
                Instant::now() < deadline,
                "kamailio did not answer OPTIONS:\n{}",
                pbx.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pbx
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.run_dir.path().join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for Pbx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        if wait_child(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A sipp far end run through `lab/sipp/run.sh` (its files go to a temp dir).
pub struct Sipp {
    child: Child,
    out: tempfile::TempDir,
    name: String,
}

impl Sipp {
    /// Starts `scenario` on sipp's SIP port and media port (it also binds media + 1 and + 2).
    pub fn spawn(scenario: &str, pbx_port: u16, sip_port: u16, media_port: u16, args: &[&str]) -> Sipp {
        let out = tempfile::tempdir().unwrap();
        let child = Command::new(repo_root().join("lab/sipp/run.sh"))
            .arg(scenario)
            .arg(out.path())
            .arg(pbx_port.to_string())
            .arg(sip_port.to_string())
            .arg(media_port.to_string())
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("sipp (run lab/install.sh)");
        Sipp {
            child,
            out,
            name: format!("{scenario}-{sip_port}"),
        }
    }

    /// Registers `user` from `sip_port`, so that a UAS started there gets its calls.
    pub fn register(pbx_port: u16, sip_port: u16, media_port: u16, user: &str, password: &str) {
        let mut s = Sipp::spawn(
            "register",
            pbx_port,
            sip_port,
            media_port,
            &["-s", user, "-ap", password],
        );
        let status = wait_child(&mut s.child, Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "sipp register failed ({status:?}):\n{}",
            s.messages()
        );
    }

    /// Every SIP message sipp sent and received.
    pub fn messages(&self) -> String {
        std::fs::read_to_string(self.out.path().join(format!("{}.msgs", self.name))).unwrap_or_default()
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

/// A running `sipline` binary.
pub struct Sipline {
    child: Child,
    pub http: SocketAddr,
    dir: tempfile::TempDir,
}

impl Sipline {
    /// Starts the gateway with this configuration and waits until it serves HTTP.
    pub fn start(config: &str, http: SocketAddr) -> Sipline {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sipline.toml");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(config.as_bytes())
            .unwrap();
        let log = std::fs::File::create(dir.path().join("sipline.log")).unwrap();
        let child = Command::new(gateway_binary())
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut s = Sipline { child, http, dir };
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

    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/v1/ws", self.http)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sipline.log")).unwrap_or_default()
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

/// The gateway's binary, from the same target directory as this package's: another
/// package's binary is not built for our tests, so it is built here when it is missing
/// or older than the gateway's sources (`cargo test --workspace` has built it already).
pub fn gateway_binary() -> PathBuf {
    let ours = Path::new(env!("CARGO_BIN_EXE_sipline-load"));
    let profile_dir = ours.parent().expect("target/<profile>");
    let bin = profile_dir.join(format!("sipline{}", std::env::consts::EXE_SUFFIX));
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let root = repo_root();
    let sources = [
        "crates/gateway",
        "crates/sip/src",
        "crates/media/src",
        "crates/pbx/src",
        "web",
        "Cargo.lock",
    ];
    let newest = sources.iter().filter_map(|s| newest_mtime(&root.join(s))).max();
    if built.is_some_and(|b| newest.is_none_or(|n| n <= b)) {
        return bin;
    }
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    let target_dir = profile_dir.parent().expect("the target directory");
    eprintln!("building the gateway: cargo build -p sipline --bin sipline --profile {profile}");
    let status = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args([
            "build",
            "-p",
            "sipline",
            "--bin",
            "sipline",
            "--profile",
            &profile,
        ])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(&root)
        .status()
        .expect("cargo");
    assert!(status.success(), "building the gateway failed");
    bin
}

/// The newest modification time of a file or of anything under a directory (skipping
/// `fuzz` and `target` directories, which the gateway's binary does not depend on).
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| !matches!(e.file_name().to_str(), Some("fuzz" | "target" | "tests")))
        .filter_map(|e| newest_mtime(&e.path()))
        .max()
}
