//! RFC 4475, "Session Initiation Protocol (SIP) Torture Test Messages", fed through the
//! user agent the way the gateway's driver feeds it datagrams.
//!
//! The messages in `tests/rfc4475/` are byte-exact: they were decoded from the
//! base64-encoded, gzip-compressed tar archive of the RFC's Appendix A (the RFC's own
//! bit-exact form, with its CRLFs, NULs and non-UTF-8 bytes), not copied from the text
//! of its pages. Each file is named after the section that describes it
//! (`3.1.1.1-wsinv.dat` is section 3.1.1.1, message "wsinv"); `A.1-test.dat` is in the
//! archive but described by no section. [`corpus_is_byte_exact`] checks a digest of them
//! all, so an editor or a checkout that rewrites line ends cannot pass unnoticed.
//!
//! Each message goes, as one UDP datagram from the registrar (the one source whose
//! out-of-dialog requests are served), to a fresh user agent hosting one registered
//! line whose user is `user`: most of the RFC's requests are for `sip:user@…`, so its
//! INVITEs reach the call path and ring instead of stopping at 404.
//!
//! [`CASES`] says, for every message, what the RFC says an element like ours (a user
//! agent: neither proxy nor registrar) does with it. Whatever the expectation, nothing
//! may panic, and whatever the user agent sends must itself parse.
//!
//! Where the user agent does not yet do what the RFC says, the row keeps the RFC's
//! expectation and its file is listed in [`KNOWN_GAPS`]; those rows are checked to still
//! fail, so fixing a gap fails this test until the row leaves the list.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sipline_sip::message::{Message, Response, Uri};
use sipline_sip::transaction::Timers;
use sipline_sip::{
    Account, CallEvent, DropReason, Event, LineState, Protection, Target, Transport, UaConfig, UserAgent,
};

/// What the RFC says an element like ours does with a message. "Status" below is the
/// last response the user agent sent for it: the final one, or 180 for an INVITE that
/// rings the line (no final answer until the browser answers).
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Answered with this status.
    Answer(u16),
    /// Answered with this status, in a response carrying this header field.
    AnswerWith(u16, &'static str),
    /// Answered with one of these statuses.
    AnyOf(&'static [u16]),
    /// Taken as well-formed: answered, and never with this status (400: not refused as
    /// malformed).
    AnswerNot(u16),
    /// Answered with an error (a status of 400 or more).
    AnyError,
    /// A well-formed message that needs no answer (a response for no transaction of
    /// ours): parsed, not refused as unparsable or invalid, and nothing sent.
    Ignored,
    /// Discarded: nothing sent, and `handle_receive` says why it dropped it.
    Dropped,
}

/// One torture message: its file, what the RFC expects, and the RFC's reason.
struct Case {
    file: &'static str,
    expect: Expect,
    why: &'static str,
}

use Expect::*;

/// Every message of RFC 4475 (and the one undescribed file of its archive).
const CASES: &[Case] = &[
    // 3.1.1 Valid messages: parsers must accept them.
    Case {
        file: "3.1.1.1-wsinv.dat",
        expect: AnswerNot(400),
        why: "short tortuous INVITE: all elements should treat this as a well-formed request",
    },
    Case {
        file: "3.1.1.2-intmeth.dat",
        expect: AnswerWith(501, "Allow"),
        why: "unusual but legal method and URI characters: endpoints generate a 501 listing the methods they understand",
    },
    Case {
        file: "3.1.1.3-esc01.dat",
        expect: AnswerNot(400),
        why: "valid % HEX HEX escapes: a parser must accept this as a well-formed message",
    },
    Case {
        file: "3.1.1.4-escnull.dat",
        expect: AnswerNot(400),
        why: "escaped NULs in URIs: the message is well formed, parsers must accept it",
    },
    Case {
        file: "3.1.1.5-esc02.dat",
        expect: Answer(501),
        why: "% that is not an escape (method RE%47IST%45R is unknown): an endpoint would reject this with a 501",
    },
    Case {
        file: "3.1.1.6-lwsdisp.dat",
        expect: AnswerNot(400),
        why: "no LWS between display name and <: elements should accept this request as well formed",
    },
    Case {
        file: "3.1.1.7-longreq.dat",
        expect: AnswerNot(400),
        why: "long header values and many Vias: a well-formed request",
    },
    Case {
        file: "3.1.1.8-dblreq.dat",
        expect: Answer(405),
        why: "trailing octets in a UDP datagram: handle the REGISTER normally (405 at an endpoint), ignore the INVITE-like noise",
    },
    Case {
        file: "3.1.1.9-semiuri.dat",
        expect: AnswerNot(400),
        why: "';' parameters in the Request-URI user part: receiving elements accept it as well formed",
    },
    Case {
        file: "3.1.1.10-transports.dat",
        expect: AnswerNot(400),
        why: "known and unknown Via transports: parsers must accept this message as well formed",
    },
    Case {
        file: "3.1.1.11-mpart01.dat",
        expect: AnswerNot(400),
        why: "multipart MIME body with NULs: parsers must accept it even if the application does not support it",
    },
    Case {
        file: "3.1.1.12-unreason.dat",
        expect: Ignored,
        why: "unusual (non-ASCII UTF-8) reason phrase: the response is well formed, a parser must accept it",
    },
    Case {
        file: "3.1.1.13-noreason.dat",
        expect: Ignored,
        why: "empty reason phrase: a well-formed response, a parser must accept it",
    },
    // 3.1.2 Invalid messages.
    Case {
        file: "3.1.2.1-badinv01.dat",
        expect: Answer(400),
        why: "extraneous ';' and ',' in Via and Contact: syntactically invalid, respond with 400",
    },
    Case {
        file: "3.1.2.2-clerr.dat",
        expect: Answer(400),
        why: "Content-Length larger than the message, over UDP: respond with 400",
    },
    Case {
        file: "3.1.2.3-ncl.dat",
        expect: AnyError,
        why: "negative Content-Length: respond with an error (the rest of the datagram can be discarded)",
    },
    Case {
        file: "3.1.2.4-scalar02.dat",
        expect: Answer(400),
        why: "overlarge scalar values in a request: respond with 400 because of the CSeq",
    },
    Case {
        file: "3.1.2.5-scalarlg.dat",
        expect: Dropped,
        why: "overlarge scalar values in a response: simply discard it",
    },
    Case {
        file: "3.1.2.6-quotbal.dat",
        expect: Answer(400),
        why: "unterminated quoted string in the To display name: return 400",
    },
    Case {
        file: "3.1.2.7-ltgtruri.dat",
        expect: AnyOf(&[400, 180]),
        why: "Request-URI enclosed in <>: reasonable always to reject with 400 (or, liberally, ignore the brackets and ring)",
    },
    Case {
        file: "3.1.2.8-lwsruri.dat",
        expect: AnyOf(&[400, 481]),
        why: "LWS inside the Request-URI: respond with 400 (or, liberally, ignore it: then 481, its To tag names no dialog)",
    },
    Case {
        file: "3.1.2.9-lwsstart.dat",
        expect: AnyOf(&[400, 180]),
        why: "multiple SP between Request-Line elements: acceptable to reject as malformed (or, liberally, ignore them and ring)",
    },
    Case {
        file: "3.1.2.10-trws.dat",
        expect: AnyOf(&[400, 200]),
        why: "SP at the end of the Request-Line: acceptable to reject as malformed (or, liberally, ignore them: OPTIONS 200)",
    },
    Case {
        file: "3.1.2.11-escruri.dat",
        expect: AnyOf(&[400, 180]),
        why: "escaped headers in the SIP Request-URI: acceptable to reject with 400 (or, liberally, ignore them and ring)",
    },
    Case {
        file: "3.1.2.12-baddate.dat",
        expect: AnswerNot(400),
        why: "non-GMT Date: an element shouldn't reject it unless the Date matters to its processing (ours ignores Date)",
    },
    Case {
        file: "3.1.2.13-regbadct.dat",
        expect: AnyOf(&[400, 405]),
        why: "Contact URI with escaped header not in <>: reasonable to respond 400 (or infer the brackets: 405, not a registrar)",
    },
    Case {
        file: "3.1.2.14-badaspec.dat",
        expect: AnyOf(&[400, 200]),
        why: "spaces within addr-spec: parsers must not break; reasonable to reject with 400 (or ignore the spaces: 200)",
    },
    // The archive's copy of baddn ends right after `l: 0\r\n`, without the empty line
    // that closes the header section.
    Case {
        file: "3.1.2.15-baddn.dat",
        expect: AnyOf(&[400, 200]),
        why: "non-token characters in unquoted display names: reasonable to reject with 400 (or infer the quotes: 200)",
    },
    Case {
        file: "3.1.2.16-badvers.dat",
        expect: Answer(505),
        why: "unknown protocol version SIP/7.0: respond with 505 Version Not Supported",
    },
    Case {
        file: "3.1.2.17-mismatch01.dat",
        expect: Answer(400),
        why: "start line and CSeq method mismatch: any element responds with 400",
    },
    Case {
        file: "3.1.2.18-mismatch02.dat",
        expect: AnyOf(&[501, 400]),
        why: "unknown method with a mismatched CSeq method: respond with 501 (400 is also acceptable)",
    },
    Case {
        file: "3.1.2.19-bigcode.dat",
        expect: Dropped,
        why: "response code larger than 699: simply drop it",
    },
    // 3.2 Transaction layer semantics.
    Case {
        file: "3.2.1-badbranch.dat",
        expect: AnyOf(&[400, 200]),
        why: "branch is the bare magic cookie: must not break; reject with 400 or fall back to RFC 2543 matching (OPTIONS 200)",
    },
    // 3.3 Application-layer semantics.
    Case {
        file: "3.3.1-insuf.dat",
        expect: Answer(400),
        why: "no Call-ID, From or To: must not break; ideally respond with 400",
    },
    Case {
        file: "3.3.2-unkscm.dat",
        expect: Answer(416),
        why: "Request-URI with an unknown scheme: reject with 416 Unsupported URI Scheme",
    },
    Case {
        file: "3.3.3-novelsc.dat",
        expect: AnyOf(&[416, 404]),
        why: "Request-URI with a known but atypical scheme (soap.beep): 416 if never meaningful, else 404",
    },
    Case {
        file: "3.3.4-unksm2.dat",
        expect: AnyOf(&[400, 405]),
        why: "non-SIP schemes in To, From, Contact: syntactically valid; a registrar answers 400 (an endpoint that is none, 405)",
    },
    Case {
        file: "3.3.5-bext01.dat",
        expect: AnswerWith(420, "Unsupported"),
        why: "unsupported Require (and Proxy-Require): respond with 420 Bad Extension listing them in Unsupported",
    },
    Case {
        file: "3.3.6-invut.dat",
        expect: Answer(415),
        why: "INVITE with a body of unknown Content-Type: an endpoint rejects it with 415 Unsupported Media Type",
    },
    Case {
        file: "3.3.7-regaut01.dat",
        expect: Answer(405),
        why: "REGISTER with an unknown Authorization scheme: endpoints that are not registrars reject it, 405 is appropriate",
    },
    Case {
        file: "3.3.8-multi01.dat",
        expect: Answer(400),
        why: "several Call-ID, To, From, Max-Forwards and CSeq values: must not break, respond with 400",
    },
    Case {
        file: "3.3.9-mcl01.dat",
        expect: AnyError,
        why: "conflicting Content-Length values: a framing error, respond with an error",
    },
    Case {
        file: "3.3.10-bcast.dat",
        expect: Ignored,
        why: "200 OK with a broadcast second Via: well formed, parsers must not fail; an endpoint simply discards it",
    },
    Case {
        file: "3.3.11-zeromf.dat",
        expect: Answer(200),
        why: "Max-Forwards 0: an endpoint processes the request as if it were still positive (OPTIONS 200, not 483)",
    },
    Case {
        file: "3.3.12-cparam01.dat",
        expect: Answer(405),
        why: "REGISTER with a contact-param outside <>: should succeed at a registrar (an endpoint that is none: 405)",
    },
    Case {
        file: "3.3.13-cparam02.dat",
        expect: Answer(405),
        why: "REGISTER with a url-parameter: should succeed at a registrar (an endpoint that is none: 405)",
    },
    Case {
        file: "3.3.14-regescrt.dat",
        expect: Answer(405),
        why: "REGISTER with an escaped header in the Contact URI: should succeed at a registrar (endpoint: 405)",
    },
    Case {
        file: "3.3.15-sdp01.dat",
        expect: AnyOf(&[406, 400]),
        why: "INVITE whose Accept excludes application/sdp: respond 406 Not Acceptable (or 400: UAs must support SDP)",
    },
    // 3.4 Backward compatibility.
    Case {
        file: "3.4.1-inv2543.dat",
        expect: AnswerNot(400),
        why: "RFC 2543 INVITE (no branch, From tag, Content-Length, Max-Forwards): accept it for backward compatibility",
    },
    // Appendix A's archive holds one more file that no section describes.
    Case {
        file: "A.1-test.dat",
        expect: Dropped,
        why: "(no section; extra file in the archive) no SIP-Version, no Via, a header line without ':': nothing to answer",
    },
];

/// Rows whose expectation the user agent does not meet yet (bugs to fix). Each must
/// still fail; move a row out of here when the user agent gets it right.
/// (Empty since session 18: every message is handled as the RFC says.)
const KNOWN_GAPS: &[&str] = &[];

/// What the user agent did with one message.
#[derive(Debug, Default)]
struct Seen {
    /// `handle_receive`'s verdict: `None` when it took the message.
    dropped: Option<DropReason>,
    /// Why, as `handle_receive` put it.
    detail: String,
    /// The responses it sent, in order.
    responses: Vec<Response>,
    /// Requests it sent (none is expected).
    requests: Vec<String>,
    /// Bytes it sent that do not parse back.
    garbage: Vec<String>,
    /// The line started ringing.
    rang: bool,
    /// The panic message, if anything panicked.
    panic: Option<String>,
}

impl Seen {
    /// The last response sent: the final answer, or a provisional one if none.
    fn last(&self) -> Option<&Response> {
        self.responses.last()
    }

    fn answer(&self) -> Option<u16> {
        self.last().map(|r| r.status)
    }

    fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }

    /// Faults that no expectation excuses.
    fn faults(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = &self.panic {
            out.push(format!("panicked: {p}"));
        }
        for g in &self.garbage {
            out.push(format!("sent unparsable bytes: {g}"));
        }
        if self.responses.iter().filter(|r| r.status >= 200).count() > 1 {
            out.push(format!("more than one final response: {:?}", self.statuses()));
        }
        if !self.requests.is_empty() {
            out.push(format!("sent requests: {:?}", self.requests));
        }
        out
    }
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dropped {
            Some(r) => write!(f, "dropped ({r:?}: {})", self.detail)?,
            None => f.write_str("taken")?,
        }
        if self.responses.is_empty() {
            f.write_str(", nothing sent")?;
        } else {
            let s: Vec<String> = self.statuses().iter().map(u16::to_string).collect();
            write!(f, ", sent {}", s.join(" "))?;
        }
        if self.rang {
            f.write_str(", line rings")?;
        }
        Ok(())
    }
}

impl Expect {
    /// Whether `seen` is what the RFC expects.
    fn check(self, seen: &Seen) -> Result<(), String> {
        let ok = match self {
            Answer(code) => seen.answer() == Some(code),
            AnswerWith(code, header) => seen
                .last()
                .is_some_and(|r| r.status == code && r.headers.get(header).is_some()),
            AnyOf(codes) => seen.answer().is_some_and(|a| codes.contains(&a)),
            AnswerNot(code) => seen.answer().is_some() && !seen.statuses().contains(&code),
            AnyError => seen.answer().is_some_and(|a| a >= 400),
            Ignored => {
                seen.responses.is_empty() && matches!(seen.dropped, None | Some(DropReason::StrayResponse))
            }
            Dropped => seen.responses.is_empty() && seen.dropped.is_some(),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected {self:?}, but {seen}"))
        }
    }
}

fn registrar() -> Target {
    Target {
        transport: Transport::Udp,
        addr: "127.0.0.1:5060".parse::<SocketAddr>().expect("literal"),
    }
}

/// The unit tests' configuration: UDP to a registrar at 127.0.0.1:5060, us on 5090.
fn config() -> UaConfig {
    UaConfig {
        transport: Transport::Udp,
        advertise_host: "127.0.0.1".into(),
        advertise_port: 5090,
        registrar_uri: Uri::parse("sip:127.0.0.1:5060").expect("literal"),
        registrar: registrar(),
        outbound_proxy: None,
        expires: 600,
        keepalive_interval: None,
        keepalive_timeout: Duration::from_secs(2),
        retry_min: Duration::from_secs(5),
        retry_max: Duration::from_secs(300),
        user_agent: "sipline-rfc4475".into(),
        no_answer_timeout: Duration::from_secs(120),
        session_timer: Some(sipline_sip::session_timer::SessionTimerConfig::default()),
        timers: Timers::default(),
        protection: Protection::default(),
        headers: Default::default(),
        calls_per_line: 1,
    }
}

/// A user agent with line `user` registered, nothing left to send.
fn registered_ua(now: Instant) -> UserAgent {
    let mut ua = UserAgent::new(now, config(), 4475);
    let line = ua.add_line(
        now,
        Account {
            user: "user".into(),
            auth_user: "user".into(),
            password: "secret".into(),
            display_name: None,
            domain: "127.0.0.1".into(),
        },
    );
    let sent = ua.poll_transmit().expect("a REGISTER");
    let Ok(Message::Request(register)) = Message::parse(&sent.data) else {
        panic!("not a request: {:?}", String::from_utf8_lossy(&sent.data));
    };
    let mut ok = Response::for_request(&register, 200, "OK");
    let to = register.headers.get("To").expect("To").to_owned();
    ok.headers.set("To", format!("{to};tag=registrar"));
    ok.headers
        .push("Contact", "<sip:user@127.0.0.1:5090>;expires=600");
    ua.handle_receive(now, registrar(), &ok.to_bytes())
        .expect("200 to our REGISTER");
    assert_eq!(ua.line_status(line).map(|s| s.state), Some(LineState::Registered));
    assert!(ua.poll_transmit().is_none(), "nothing more to send");
    while ua.poll_event().is_some() {}
    ua
}

/// Feeds one datagram from the registrar and records what the user agent does.
fn feed(data: &[u8]) -> Seen {
    let mut seen = Seen::default();
    let now = Instant::now();
    let run = catch_unwind(AssertUnwindSafe(|| {
        let mut ua = registered_ua(now);
        let result = ua.handle_receive(now, registrar(), data);
        if let Err(d) = result {
            seen.dropped = Some(d.reason);
            seen.detail = d.detail;
        }
        while let Some(t) = ua.poll_transmit() {
            match Message::parse(&t.data) {
                Ok(Message::Response(r)) => seen.responses.push(r),
                Ok(Message::Request(r)) => seen.requests.push(format!("{} {}", r.method, r.uri)),
                Err(e) => seen
                    .garbage
                    .push(format!("{e}: {:?}", String::from_utf8_lossy(&t.data))),
            }
        }
        while let Some(e) = ua.poll_event() {
            if let Event::Call {
                event: CallEvent::Incoming { .. },
                ..
            } = e
            {
                seen.rang = true;
            }
        }
    }));
    if let Err(p) = run {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-string panic)".into());
        seen.panic = Some(msg);
    }
    seen
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/rfc4475")
}

fn read(file: &str) -> Vec<u8> {
    let path = corpus_dir().join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn torture_messages_get_the_rfc_answers() {
    let mut failures = Vec::new();
    let mut fixed = Vec::new();
    let mut report = String::new();
    for case in CASES {
        let seen = feed(&read(case.file));
        let faults = seen.faults();
        let verdict = case.expect.check(&seen);
        let gap = KNOWN_GAPS.contains(&case.file);
        report.push_str(&format!(
            "{:<26} {:<30} {}{}\n",
            case.file,
            format!("{:?}", case.expect),
            seen,
            if gap { "  [known gap]" } else { "" }
        ));
        if !faults.is_empty() {
            failures.push(format!("{}: {}", case.file, faults.join("; ")));
        }
        match (verdict, gap) {
            (Ok(()), false) | (Err(_), true) => {}
            (Err(why), false) => failures.push(format!("{}: {why} (RFC: {})", case.file, case.why)),
            (Ok(()), true) => fixed.push(case.file),
        }
    }
    println!("{report}");
    for file in &fixed {
        failures.push(format!(
            "{file}: now handled as RFC 4475 says: remove it from KNOWN_GAPS"
        ));
    }
    assert!(
        failures.is_empty(),
        "RFC 4475 torture messages:\n{}\n\n{report}",
        failures.join("\n")
    );
}

#[test]
fn every_message_has_one_row() {
    let rows: Vec<&str> = CASES.iter().map(|c| c.file).collect();
    let unique: BTreeSet<&str> = rows.iter().copied().collect();
    assert_eq!(unique.len(), rows.len(), "a file has two rows");
    let on_disk: BTreeSet<String> = std::fs::read_dir(corpus_dir())
        .expect("tests/rfc4475")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".dat"))
        .collect();
    let in_table: BTreeSet<String> = unique.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(on_disk, in_table, "tests/rfc4475 and CASES disagree");
    // 49 messages described in sections 3.1 to 3.4, plus test.dat
    assert_eq!(rows.len(), 50);
    for gap in KNOWN_GAPS {
        assert!(unique.contains(gap), "KNOWN_GAPS names {gap}, which has no row");
    }
    assert_eq!(
        KNOWN_GAPS.iter().collect::<BTreeSet<_>>().len(),
        KNOWN_GAPS.len(),
        "KNOWN_GAPS names a file twice"
    );
}

/// SHA-256 over every message in table order (file name, NUL, length as u64 LE,
/// bytes), as decoded from the RFC's archive.
const CORPUS_SHA256: &str = "0cd1f3f7ee897163e57ecafc57d770e9fb0ccaf82214d7db86245ba261b40426";

#[test]
fn corpus_is_byte_exact() {
    let mut h = Sha256::new();
    for case in CASES {
        let data = read(case.file);
        h.update(case.file.as_bytes());
        h.update([0u8]);
        h.update((data.len() as u64).to_le_bytes());
        h.update(&data);
    }
    let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        digest, CORPUS_SHA256,
        "tests/rfc4475 no longer holds the bytes of RFC 4475's Appendix A archive \
         (line ends rewritten?); decode the archive again"
    );
}
