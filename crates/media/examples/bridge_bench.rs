//! Media bridge benchmark: N concurrent calls, relayed or transcoded, in real time over
//! loopback UDP, reporting CPU-seconds per call-minute and packets per second.
//!
//!     cargo run --release -p sipline-media --example bridge_bench -- [CALLS] [SECONDS]
//!
//! Each call has a "far end" UDP socket sending 20 ms PCMU packets to the call's SIP-leg
//! socket, and a simulated browser feeding the bridge 20 ms packets (PCMU for the
//! relayed run, Opus for the transcoded run, pre-encoded so only the bridge's own work
//! is measured). Everything the bridge sends towards the far end goes through the
//! loopback socket and is read back; packets for the browser are counted (in the
//! gateway str0m would encrypt them, which this does not measure).

use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime};

use sipline_media::audio::AudioEncoder;
use sipline_media::bridge::{Bridge, BrowserLeg, LegCodec, Output, SipLeg};
use sipline_media::rtp::RtpPacket;
use sipline_media::sdp::Codec;

/// Process CPU time (user + system) from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; after the ')' (field 3 first) 11 and 12
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    Duration::from_secs_f64(ticks as f64 / 100.0)
}

struct Call {
    bridge: Bridge,
    sip_sock: UdpSocket,
    far_sock: UdpSocket,
    far_seq: u16,
    far_ts: u32,
    browser_seq: u16,
    browser_ts: u32,
}

fn run(calls: usize, seconds: u64, transcode: bool) {
    let pcmu = LegCodec {
        codec: Codec::Pcmu,
        payload_type: 0,
    };
    let opus = LegCodec {
        codec: Codec::Opus,
        payload_type: 111,
    };
    let browser_codec = if transcode { opus } else { pcmu };
    let tone: Vec<i16> = (0..960 * 50)
        .map(|i| ((i as f32 * 1000.0 * 2.0 * std::f32::consts::PI / 48_000.0).sin() * 12_000.0) as i16)
        .collect();
    let frames: Vec<Vec<u8>> = if transcode {
        let mut enc = AudioEncoder::new(Codec::Opus, 48_000).expect("opus");
        tone.chunks(960).map(|f| enc.encode(f)).collect()
    } else {
        let mut enc = AudioEncoder::new(Codec::Pcmu, 8000).expect("pcmu");
        tone.chunks(960)
            .map(|f| enc.encode(&f.iter().step_by(6).copied().collect::<Vec<_>>()))
            .collect()
    };
    let far_payload = {
        let mut enc = AudioEncoder::new(Codec::Pcmu, 8000).expect("pcmu");
        enc.encode(&tone[..160])
    };

    let now = Instant::now();
    let unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut all: Vec<Call> = (0..calls)
        .map(|i| {
            let sip_sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let far_sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
            sip_sock.set_nonblocking(true).expect("nonblocking");
            far_sock.set_nonblocking(true).expect("nonblocking");
            let bridge = Bridge::new(
                now,
                unix,
                BrowserLeg {
                    codecs: vec![browser_codec],
                    dtmf: vec![],
                },
                SipLeg {
                    codec: pcmu,
                    dtmf_payload_type: Some(101),
                    ptime_ms: 20,
                    send: true,
                    receive: true,
                },
                i as u64,
            );
            Call {
                bridge,
                sip_sock,
                far_sock,
                far_seq: 0,
                far_ts: 0,
                browser_seq: 0,
                browser_ts: 0,
            }
        })
        .collect();

    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let mut tick = t0;
    let mut packets: u64 = 0;
    let mut to_browser: u64 = 0;
    let mut buf = [0u8; 2048];
    let mut frame = 0usize;
    while t0.elapsed() < Duration::from_secs(seconds) {
        tick += Duration::from_millis(20);
        for c in all.iter_mut() {
            // the far end speaks
            let p = RtpPacket {
                marker: false,
                payload_type: 0,
                sequence: c.far_seq,
                timestamp: c.far_ts,
                ssrc: 7,
                payload: &far_payload,
            };
            c.far_seq = c.far_seq.wrapping_add(1);
            c.far_ts = c.far_ts.wrapping_add(160);
            let _ = c
                .far_sock
                .send_to(&p.to_vec(), c.sip_sock.local_addr().expect("addr"));
            // the browser speaks
            let now = Instant::now();
            c.bridge.from_browser(
                now,
                browser_codec.payload_type,
                c.browser_seq,
                c.browser_ts,
                9,
                &frames[frame],
            );
            c.browser_seq = c.browser_seq.wrapping_add(1);
            c.browser_ts = c.browser_ts.wrapping_add(if transcode { 960 } else { 160 });
            packets += 2;
        }
        frame = (frame + 1) % frames.len();
        for c in all.iter_mut() {
            let now = Instant::now();
            while let Ok((n, _)) = c.sip_sock.recv_from(&mut buf) {
                let _ = c.bridge.from_sip(now, &buf[..n]);
            }
            c.bridge.handle_timeout(now);
            let far = c.far_sock.local_addr().expect("addr");
            while let Some(out) = c.bridge.poll_output() {
                match out {
                    Output::Sip(d) => {
                        let _ = c.sip_sock.send_to(&d, far);
                    }
                    Output::Browser(_) => to_browser += 1,
                    _ => {}
                }
            }
            while c.far_sock.recv_from(&mut buf).is_ok() {}
        }
        let now = Instant::now();
        if tick > now {
            std::thread::sleep(tick - now);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu0).as_secs_f64();
    let call_minutes = calls as f64 * wall / 60.0;
    println!(
        "{:>10}: {calls} calls for {wall:.1} s: {cpu:.2} CPU-s, {:.4} CPU-s per call-minute, {:.0} packets/s in ({:.0}/s to the browser), load {:.1} % of one core",
        if transcode { "transcoded" } else { "relayed" },
        cpu / call_minutes,
        packets as f64 / wall,
        to_browser as f64 / wall,
        100.0 * cpu / wall
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let calls: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    run(calls, seconds, false);
    run(calls, seconds, true);
}
