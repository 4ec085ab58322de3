//! A deterministic, fast cousin of the cargo-fuzz targets in `fuzz/`, run with every
//! `cargo test`: mutated real-world messages must parse or fail cleanly, and whatever
//! parses must serialise into bytes that parse again.

use sipline_sip::message::{Message, frame_length};

const SAMPLES: &[&str] = &[
    "INVITE sip:1000@127.0.0.1:5090;transport=udp SIP/2.0\r\n\
     Record-Route: <sip:127.0.0.1:5060;lr>\r\n\
     Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK4b0b.1;rport=5060\r\n\
     Via: SIP/2.0/UDP 127.0.0.1:5074;received=127.0.0.1;rport=5074;branch=z9hG4bKa\r\n\
     Max-Forwards: 69\r\n\
     To: <sip:1000@127.0.0.1>\r\n\
     From: \"Desk\" <sip:1002@127.0.0.1>;tag=8c6c\r\n\
     Call-ID: 2f1d4@127.0.0.1\r\n\
     CSeq: 10 INVITE\r\n\
     Contact: <sip:1002@127.0.0.1:5074;transport=udp>\r\n\
     Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,REFER,UPDATE\r\n\
     Content-Type: application/sdp\r\n\
     Content-Length: 139\r\n\r\n\
     v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n",
    "SIP/2.0 401 Unauthorized\r\n\
     Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKx;rport=5090\r\n\
     From: <sip:880@127.0.0.1>;tag=a\r\nTo: <sip:880@127.0.0.1>;tag=b\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\n\
     WWW-Authenticate: Digest realm=\"127.0.0.1\", nonce=\"Y2kNXmNpDDEw\", qop=\"auth\"\r\n\
     Server: kamailio\r\nContent-Length: 0\r\n\r\n",
    "SIP/2.0 200 OK\r\nv: SIP/2.0/TCP [::1]:5090;branch=z9hG4bKy\r\nf: <sip:a@b>;tag=1\r\nt: <sip:a@b>;tag=2\r\n\
     i: id\r\nCSeq: 7 REGISTER\r\nm: <sip:880@127.0.0.1:5090>;expires=600, <sip:880@10.0.0.1>;expires=10\r\nl: 0\r\n\r\n",
    "OPTIONS sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP h\n  ;branch=z9hG4bKz\nCSeq: 1 OPTIONS\n\n",
];

fn mutate(rng: &mut fastrand::Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.usize(1..6) {
        if v.is_empty() {
            v.push(rng.u8(..));
            continue;
        }
        let at = rng.usize(..v.len());
        match rng.u8(0..7) {
            0 => v[at] = rng.u8(..),
            1 => {
                v.remove(at);
            }
            2 => v.insert(at, *rng.choice(b"\r\n:;,<>\"@ =\t[]?/").unwrap()),
            3 => v.truncate(at),
            4 => {
                let end = rng.usize(at..=v.len());
                let chunk = v[at..end].to_vec();
                let to = rng.usize(..=v.len());
                v.splice(to..to, chunk);
            }
            5 => v.insert(at, rng.u8(0x80..)),
            _ => {
                let digits = format!("{}", rng.u64(..));
                v.splice(at..at, digits.bytes());
            }
        }
    }
    v
}

#[test]
fn mutated_messages_never_panic_and_round_trip() {
    let mut rng = fastrand::Rng::with_seed(0x5197);
    let mut parsed = 0;
    for i in 0..60_000 {
        let sample = SAMPLES[i % SAMPLES.len()].as_bytes();
        let data = mutate(&mut rng, sample);
        let _ = frame_length(&data);
        let Ok(msg) = Message::parse(&data) else {
            continue;
        };
        parsed += 1;
        let h = msg.headers();
        let _ = (h.vias(), h.cseq(), h.from(), h.to(), h.contacts(), h.call_id());
        if let Message::Request(r) = &msg {
            let _ = r.validate();
        }
        let bytes = msg.to_bytes();
        let again = Message::parse(&bytes)
            .unwrap_or_else(|e| panic!("re-parse failed ({e}) for {:?}", String::from_utf8_lossy(&bytes)));
        assert_eq!(again.to_bytes(), bytes);
    }
    assert!(parsed > 10_000, "mutations too destructive: only {parsed} parsed");
}

#[test]
fn samples_parse() {
    for s in SAMPLES {
        Message::parse(s.as_bytes()).unwrap();
    }
}
