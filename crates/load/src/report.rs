//! What a run measured: one [`CallRecord`] per session, and the [`Report`] that sums
//! them up (percentiles, totals, loss both ways, CPU) as the table people read or the
//! JSON object scripts read. The field names of both are an interface.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::Options;

/// One leg of a call as the gateway reported it in its last `callStats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GatewayLeg {
    pub codec: Option<String>,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// Packets the other side of this leg sent that the gateway never got.
    pub packets_lost: u64,
    pub jitter_ms: f64,
    pub rtt_ms: Option<f64>,
}

impl GatewayLeg {
    pub fn from_json(v: &Value) -> Option<GatewayLeg> {
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        v.is_object().then(|| GatewayLeg {
            codec: v.get("codec").and_then(Value::as_str).map(str::to_owned),
            packets_sent: n("packetsSent"),
            packets_received: n("packetsReceived"),
            packets_lost: n("packetsLost"),
            jitter_ms: v.get("jitterMs").and_then(Value::as_f64).unwrap_or(0.0),
            rtt_ms: v.get("rttMs").and_then(Value::as_f64),
        })
    }
}

/// One session (and its call), as this end measured it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallRecord {
    pub index: usize,
    /// The leased account.
    pub user: Option<String>,
    /// Everything went as it should (connected, and with a call, echoed).
    pub ok: bool,
    pub error: Option<String>,
    /// From connect: registered, and WebRTC up (ms).
    pub register_ms: Option<f64>,
    pub webrtc_ms: Option<f64>,
    pub call_id: Option<String>,
    /// The call reached `inCall`.
    pub connected: bool,
    /// `call` sent → `inCall` (ms).
    pub setup_ms: Option<f64>,
    /// `inCall` → the first RTP packet of our codec (ms).
    pub first_audio_ms: Option<f64>,
    pub final_state: Option<String>,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// From the sequence numbers of what came back (gateway → client).
    pub packets_lost: u64,
    pub loss_pct: Option<f64>,
    /// RFC 3550 interarrival jitter of what came back, at the end of the call (ms).
    pub jitter_ms: Option<f64>,
    /// Frames the tool skipped because it fell behind (it was overloaded).
    pub late_frames: u64,
    pub send_errors: u64,
    /// Share of our PCMU payloads that came back byte for byte.
    pub matched_share: Option<f64>,
    /// The tone against the rest in the decoded echo (dB).
    pub tone_snr_db: Option<f64>,
    pub echo_ok: bool,
    pub call_stats_received: u32,
    /// The gateway's view: the WebRTC leg (what it got from us) and the SIP leg.
    pub gateway_browser_leg: Option<GatewayLeg>,
    pub gateway_sip_leg: Option<GatewayLeg>,
}

impl CallRecord {
    pub fn new(index: usize) -> CallRecord {
        CallRecord {
            index,
            ..CallRecord::default()
        }
    }
}

/// Percentiles of a set of values (nearest rank), None when it is empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spread {
    pub count: usize,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Spread {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| -> Option<f64> {
            if v.is_empty() {
                return None;
            }
            let i = ((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
            Some(v[i])
        };
        Spread {
            count: v.len(),
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: v.last().copied(),
        }
    }
}

/// Loss in percent, in each direction and from each side's view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Loss {
    /// Gateway → client, from the sequence numbers this end received.
    pub to_client_client_view: Option<f64>,
    /// Client → gateway, as the gateway counted it (`callStats` browser leg).
    pub to_gateway_gateway_view: Option<f64>,
    /// Far end → gateway, as the gateway counted it (`callStats` SIP leg).
    pub far_end_gateway_view: Option<f64>,
}

/// Jitter in ms: this end's RFC 3550 figure per call, and the gateway's mean.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Jitter {
    pub client: Spread,
    /// Mean of the gateway's browser-leg jitter over calls that reported it.
    pub gateway_browser_leg_mean: Option<f64>,
    pub gateway_sip_leg_mean: Option<f64>,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub sessions: usize,
    pub ok: usize,
    pub failed: usize,
    /// Calls that reached `inCall`.
    pub connected: usize,
    pub echo_ok: usize,
    /// Connect → the line `registered` (the gateway's REGISTER round trip to the PBX
    /// included), and connect → WebRTC up.
    pub register_ms: Spread,
    pub webrtc_ms: Spread,
    pub setup_ms: Spread,
    pub first_audio_ms: Spread,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub loss_pct: Loss,
    pub jitter_ms: Jitter,
    pub late_frames: u64,
    /// Failed sessions by reason (the reason up to its first ':').
    pub failures: BTreeMap<String, usize>,
    pub wall_secs: f64,
    /// The tool's own CPU time (user + system) over the run.
    pub tool_cpu_secs: Option<f64>,
    /// The gateway's, with --gateway-pid.
    pub gateway_cpu_secs: Option<f64>,
    /// The command line (without the token).
    pub options: Options,
    pub calls: Vec<CallRecord>,
}

fn pct(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 * 1e5 / whole as f64).round() / 1e3)
}

fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.into_iter().fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| (sum / n as f64 * 100.0).round() / 100.0)
}

impl Report {
    pub fn new(
        options: Options,
        calls: Vec<CallRecord>,
        wall_secs: f64,
        tool_cpu_secs: Option<f64>,
        gateway_cpu_secs: Option<f64>,
    ) -> Report {
        let ok = calls.iter().filter(|c| c.ok).count();
        let mut failures = BTreeMap::new();
        for c in &calls {
            if let Some(e) = &c.error {
                let key = e.split(':').next().unwrap_or(e).trim().to_owned();
                *failures.entry(key).or_insert(0) += 1;
            }
        }
        let sum = |f: fn(&CallRecord) -> u64| calls.iter().map(f).sum::<u64>();
        let received = sum(|c| c.packets_received);
        let lost = sum(|c| c.packets_lost);
        let browser: Vec<&GatewayLeg> = calls
            .iter()
            .filter_map(|c| c.gateway_browser_leg.as_ref())
            .collect();
        let sip: Vec<&GatewayLeg> = calls.iter().filter_map(|c| c.gateway_sip_leg.as_ref()).collect();
        let leg_loss = |legs: &[&GatewayLeg]| {
            let lost: u64 = legs.iter().map(|l| l.packets_lost).sum();
            let got: u64 = legs.iter().map(|l| l.packets_received).sum();
            pct(lost, lost + got)
        };
        Report {
            sessions: calls.len(),
            ok,
            failed: calls.len() - ok,
            connected: calls.iter().filter(|c| c.connected).count(),
            echo_ok: calls.iter().filter(|c| c.echo_ok).count(),
            register_ms: Spread::of(calls.iter().filter_map(|c| c.register_ms)),
            webrtc_ms: Spread::of(calls.iter().filter_map(|c| c.webrtc_ms)),
            setup_ms: Spread::of(calls.iter().filter_map(|c| c.setup_ms)),
            first_audio_ms: Spread::of(calls.iter().filter_map(|c| c.first_audio_ms)),
            packets_sent: sum(|c| c.packets_sent),
            packets_received: received,
            loss_pct: Loss {
                to_client_client_view: pct(lost, lost + received),
                to_gateway_gateway_view: leg_loss(&browser),
                far_end_gateway_view: leg_loss(&sip),
            },
            jitter_ms: Jitter {
                client: Spread::of(calls.iter().filter_map(|c| c.jitter_ms)),
                gateway_browser_leg_mean: mean(browser.iter().map(|l| l.jitter_ms)),
                gateway_sip_leg_mean: mean(sip.iter().map(|l| l.jitter_ms)),
            },
            late_frames: sum(|c| c.late_frames),
            failures,
            wall_secs: (wall_secs * 10.0).round() / 10.0,
            tool_cpu_secs,
            gateway_cpu_secs,
            options,
            calls,
        }
    }

    /// Every session did what it should.
    pub fn all_ok(&self) -> bool {
        self.failed == 0
    }

    /// Why the run failed, in one line (for stderr).
    pub fn failure_summary(&self) -> Option<String> {
        if self.all_ok() {
            return None;
        }
        let reasons: Vec<String> = self.failures.iter().map(|(r, n)| format!("{n}× {r}")).collect();
        Some(format!(
            "{} of {} sessions failed: {}",
            self.failed,
            self.sessions,
            reasons.join(", ")
        ))
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let o = &self.options;
        let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |x| format!("{x:.1}"));
        let f2 = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"));
        let mut t = String::new();
        let mode = if o.idle {
            format!("idle sessions for {} s", o.hold_secs)
        } else {
            format!("calls to {}, {} for {} s", o.number, o.codec.name(), o.hold_secs)
        };
        let _ = writeln!(
            t,
            "sipline-load: {} {mode}, ramp {}/s, against {}",
            self.sessions, o.ramp, o.url
        );
        let mut row = |k: &str, v: String| {
            let _ = writeln!(t, "  {k:<18} {v}");
        };
        let spread = |s: &Spread| {
            format!(
                "p50 {}  p90 {}  p99 {}  max {}",
                f(s.p50),
                f(s.p90),
                f(s.p99),
                f(s.max)
            )
        };
        row("registered ms", spread(&self.register_ms));
        row("WebRTC up ms", spread(&self.webrtc_ms));
        if o.idle {
            row(
                "sessions",
                format!("{} ok, {} failed (registered, WebRTC up)", self.ok, self.failed),
            );
        } else {
            row(
                "calls",
                format!(
                    "{} ok, {} failed ({} connected, {} echo ok)",
                    self.ok, self.failed, self.connected, self.echo_ok
                ),
            );
            row("setup ms", spread(&self.setup_ms));
            let a = &self.first_audio_ms;
            row("first audio ms", format!("p50 {}  p99 {}", f(a.p50), f(a.p99)));
            row(
                "packets",
                format!("{} sent, {} received", self.packets_sent, self.packets_received),
            );
            let l = &self.loss_pct;
            row(
                "loss %",
                format!(
                    "to client {} (client's view), to gateway {} (gateway's view), far end {} (gateway's view)",
                    f2(l.to_client_client_view),
                    f2(l.to_gateway_gateway_view),
                    f2(l.far_end_gateway_view)
                ),
            );
            let j = &self.jitter_ms;
            row(
                "jitter ms",
                format!(
                    "client p50 {}  p99 {}; gateway mean {} (browser leg), {} (far end leg)",
                    f2(j.client.p50),
                    f2(j.client.p99),
                    f2(j.gateway_browser_leg_mean),
                    f2(j.gateway_sip_leg_mean)
                ),
            );
            row("echo ok", format!("{} of {}", self.echo_ok, self.sessions));
        }
        let share = |cpu: Option<f64>| match cpu {
            Some(c) if self.wall_secs > 0.0 => {
                format!("{c:.1} s ({:.0} % of one core)", c * 100.0 / self.wall_secs)
            }
            Some(c) => format!("{c:.1} s"),
            None => "-".into(),
        };
        row(
            "CPU",
            format!(
                "tool {}, gateway {}, over {:.1} s",
                share(self.tool_cpu_secs),
                if o.gateway_pid.is_some() {
                    share(self.gateway_cpu_secs)
                } else {
                    "- (--gateway-pid)".into()
                },
                self.wall_secs
            ),
        );
        if self.late_frames > 0 {
            row(
                "tool overloaded",
                format!(
                    "{} frames sent late and skipped: the figures are the tool's too",
                    self.late_frames
                ),
            );
        }
        for (reason, n) in &self.failures {
            row("failed", format!("{n}× {reason}"));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Spread::of((1..=100).map(f64::from));
        assert_eq!(
            (s.p50, s.p90, s.p99, s.max),
            (Some(50.0), Some(90.0), Some(99.0), Some(100.0))
        );
        let s = Spread::of([3.0, 1.0, 2.0]);
        assert_eq!((s.count, s.p50, s.p99), (3, Some(2.0), Some(3.0)));
        assert_eq!(Spread::of([]).p50, None);
    }

    fn call(i: usize, ok: bool) -> CallRecord {
        CallRecord {
            ok,
            connected: true,
            echo_ok: ok,
            setup_ms: Some(10.0 + i as f64),
            first_audio_ms: Some(2.0),
            packets_sent: 250,
            packets_received: 249,
            packets_lost: 1,
            jitter_ms: Some(0.5),
            error: (!ok).then(|| "no echo: 0 % of the payloads".to_owned()),
            gateway_browser_leg: GatewayLeg::from_json(&json!({
                "codec": "PCMU", "packetsSent": 249, "packetsReceived": 248, "packetsLost": 2,
                "loss": 0.0, "jitterMs": 1.0
            })),
            ..CallRecord::new(i)
        }
    }

    #[test]
    fn a_report_sums_up_its_calls() {
        let o = Options::parse_from(["sipline-load", "--url", "ws://h:1/api/v1/ws", "--calls", "3"]);
        let r = Report::new(
            o,
            vec![call(0, true), call(1, true), call(2, false)],
            10.0,
            Some(1.5),
            None,
        );
        assert_eq!((r.ok, r.failed, r.connected, r.echo_ok), (2, 1, 3, 2));
        assert_eq!(r.packets_sent, 750);
        assert_eq!(r.loss_pct.to_client_client_view, Some(0.4));
        assert_eq!(r.loss_pct.to_gateway_gateway_view, Some(0.8));
        assert_eq!(r.jitter_ms.gateway_browser_leg_mean, Some(1.0));
        assert_eq!(r.failures.get("no echo"), Some(&1));
        assert_eq!(r.failure_summary().unwrap(), "1 of 3 sessions failed: 1× no echo");
        let table = r.table();
        assert!(
            table.contains("2 ok, 1 failed (3 connected, 2 echo ok)"),
            "{table}"
        );
        assert!(table.contains("p50 11.0"), "{table}");
        assert!(table.contains("tool 1.5 s (15 % of one core)"), "{table}");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["calls"].as_array().unwrap().len(), 3);
        assert_eq!(v["setup_ms"]["max"], 12.0);
        assert!(
            v["options"].get("token").is_none(),
            "the token stays out of reports"
        );
    }
}
