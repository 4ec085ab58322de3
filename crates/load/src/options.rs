//! The command line. Its flag names are an interface (benchmark scripts are written
//! against them), so they live in one place, with the checks that turn a bad
//! combination into one message before anything connects.

use std::net::IpAddr;

use clap::{Parser, ValueEnum};
use serde::Serialize;
use sipline_media::sdp::Codec;

/// The codec the simulated browsers offer (and therefore send).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecChoice {
    /// G.711 µ-law: relayed untouched when the far end speaks PCMU too.
    Pcmu,
    /// Opus at 48 kHz, as browsers send it: transcoded when the far end speaks G.711.
    Opus,
}

impl CodecChoice {
    pub fn codec(self) -> Codec {
        match self {
            CodecChoice::Pcmu => Codec::Pcmu,
            CodecChoice::Opus => Codec::Opus,
        }
    }

    /// RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            CodecChoice::Pcmu => 8000,
            CodecChoice::Opus => 48_000,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CodecChoice::Pcmu => "PCMU",
            CodecChoice::Opus => "opus",
        }
    }
}

/// `sipline-load`: browser sessions against a running sipline gateway.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(
    name = "sipline-load",
    version,
    about = "Load generator for sipline: N browser sessions (WebSocket JSON-RPC + WebRTC), each \
             calling a number and streaming a tone; per-call setup, first audio, loss, jitter, echo"
)]
pub struct Options {
    /// The gateway's browser API, e.g. ws://127.0.0.1:8080/api/v1/ws.
    #[arg(long)]
    pub url: String,
    /// Access token, sent as `Authorization: Bearer TOKEN`.
    #[arg(long)]
    #[serde(skip)]
    pub token: Option<String>,
    /// Browser sessions (one call each, or none with --idle).
    #[arg(long)]
    pub calls: usize,
    /// The number every session calls (an echoing far end: sipp -rtp_echo, or 600 on
    /// the embedded PBX).
    #[arg(long, default_value = "1001")]
    pub number: String,
    /// The codec the sessions offer and send.
    #[arg(long, value_enum, default_value_t = CodecChoice::Pcmu)]
    pub codec: CodecChoice,
    /// How long each call lasts once answered (with --idle: how long each session stays).
    #[arg(long, default_value_t = 60.0)]
    pub hold_secs: f64,
    /// Sessions started (and so calls placed) per second.
    #[arg(long, default_value_t = 10.0)]
    pub ramp: f64,
    /// The tone each session sends, in Hz (within the telephone band, 100-3400).
    #[arg(long, default_value_t = 1000)]
    pub tone_hz: u32,
    /// Sessions only register and bring WebRTC up, and send no media: the cost of idle
    /// sessions.
    #[arg(long)]
    pub idle: bool,
    /// Local address of the sessions' UDP sockets (their ICE host candidate).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Print the summary as one JSON object (with every call under "calls").
    #[arg(long)]
    pub json: bool,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, default_value_t = 1.0)]
    pub progress_secs: f64,
    /// The gateway's process id, when it runs on this machine: its CPU time during the
    /// run goes into the summary.
    #[arg(long)]
    pub gateway_pid: Option<u32>,
    /// Threads the sessions run on. One keeps the tool to one core, leaving the rest of
    /// a shared machine to the gateway; when it cannot keep up, the summary says so
    /// ("tool overloaded"): give it more, or run it on another machine.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

impl Options {
    /// Refuses combinations that cannot work, in words.
    pub fn validate(&self) -> Result<(), String> {
        if !self.url.starts_with("ws://") {
            return Err(if self.url.starts_with("wss://") {
                "--url: wss:// is not supported; point the load at a ws:// listener".into()
            } else {
                format!("--url must be ws://HOST:PORT/api/v1/ws, not {:?}", self.url)
            });
        }
        if self.calls == 0 {
            return Err("--calls must be at least 1".into());
        }
        if !(self.ramp.is_finite() && self.ramp > 0.0) {
            return Err("--ramp must be a positive number of sessions a second".into());
        }
        if !(self.hold_secs.is_finite() && self.hold_secs >= 0.0) {
            return Err("--hold-secs must be 0 or more".into());
        }
        if !(100..=3400).contains(&self.tone_hz) {
            return Err("--tone-hz must be within 100-3400 Hz (it crosses G.711)".into());
        }
        if self.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        if !(self.progress_secs.is_finite() && self.progress_secs >= 0.0) {
            return Err("--progress-secs must be 0 or more".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_command_line_parses() {
        let o = Options::try_parse_from([
            "sipline-load",
            "--url",
            "ws://127.0.0.1:8080/api/v1/ws",
            "--token",
            "t",
            "--calls",
            "5",
            "--number",
            "600",
            "--codec",
            "opus",
            "--hold-secs",
            "5",
            "--ramp",
            "2.5",
            "--tone-hz",
            "440",
            "--idle",
            "--bind",
            "127.0.0.2",
            "--json",
            "--progress-secs",
            "0",
        ])
        .unwrap();
        assert_eq!(o.calls, 5);
        assert_eq!(o.codec, CodecChoice::Opus);
        assert_eq!(o.ramp, 2.5);
        assert!(o.idle && o.json);
        assert_eq!(o.validate(), Ok(()));
    }

    #[test]
    fn defaults_and_refusals() {
        let o =
            Options::try_parse_from(["sipline-load", "--url", "ws://h:1/api/v1/ws", "--calls", "1"]).unwrap();
        assert_eq!(
            (o.number.as_str(), o.codec, o.hold_secs, o.ramp, o.tone_hz),
            ("1001", CodecChoice::Pcmu, 60.0, 10.0, 1000)
        );
        let bad = |f: fn(&mut Options)| {
            let mut o = o.clone();
            f(&mut o);
            o.validate().unwrap_err()
        };
        assert!(bad(|o| o.url = "wss://h/api/v1/ws".into()).contains("wss"));
        assert!(bad(|o| o.calls = 0).contains("--calls"));
        assert!(bad(|o| o.ramp = 0.0).contains("--ramp"));
        assert!(bad(|o| o.tone_hz = 5000).contains("--tone-hz"));
    }
}
