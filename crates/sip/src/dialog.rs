//! Dialogs (RFC 3261 §12): the peer-to-peer relationship an INVITE sets up, and
//! everything needed to send requests inside it (ACK for 2xx, BYE, INFO, re-INVITE):
//! Call-ID and tags, CSeq counters, the remote target from Contact, and the route set
//! from Record-Route. Also where such a request goes: the first loose route, or the
//! remote target.

use std::net::{IpAddr, SocketAddr};

use crate::message::{CSeq, Method, NameAddr, ParseError, Request, Response, Uri};
use crate::transport::{Target, Transport};
use crate::user_agent::UaConfig;

/// Identifies a dialog from our side.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

#[derive(Debug, Clone)]
pub struct Dialog {
    pub id: DialogId,
    /// Our address-of-record with our tag (From of our requests).
    pub local: NameAddr,
    /// Theirs, with their tag (To of our requests).
    pub remote: NameAddr,
    pub local_seq: u32,
    pub remote_seq: Option<u32>,
    /// Where in-dialog requests are addressed (their Contact).
    pub remote_target: Uri,
    /// Route headers for our requests, in order.
    pub route_set: Vec<String>,
}

impl Dialog {
    /// The dialog a 2xx (or 1xx with a To tag) creates for the INVITE we sent (§12.1.2).
    pub fn for_uac(invite: &Request, resp: &Response) -> Result<Dialog, ParseError> {
        let local = invite.headers.from()?;
        let remote = resp.headers.to()?;
        let remote_tag = remote
            .tag()
            .ok_or_else(|| ParseError::new("response without To tag"))?
            .to_owned();
        let local_tag = local
            .tag()
            .ok_or_else(|| ParseError::new("our INVITE has no From tag"))?
            .to_owned();
        let mut route_set = resp
            .headers
            .values("Record-Route")
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        route_set.reverse();
        let remote_target = match resp.headers.contacts()?.into_iter().next() {
            Some(c) => c.uri,
            None => invite.uri.clone(),
        };
        Ok(Dialog {
            id: DialogId {
                call_id: invite.headers.call_id()?.to_owned(),
                local_tag,
                remote_tag,
            },
            local,
            remote,
            local_seq: invite.headers.cseq()?.seq,
            remote_seq: None,
            remote_target,
            route_set,
        })
    }

    /// The dialog we create by answering an INVITE with our tag `local_tag` (§12.1.1).
    pub fn for_uas(invite: &Request, local_tag: &str, local_seq: u32) -> Result<Dialog, ParseError> {
        let remote = invite.headers.from()?;
        let mut local = invite.headers.to()?;
        local.params.set("tag", Some(local_tag));
        let remote_tag = remote.tag().unwrap_or_default().to_owned();
        let remote_target = invite
            .headers
            .contacts()?
            .into_iter()
            .next()
            .ok_or_else(|| ParseError::new("INVITE without Contact"))?
            .uri;
        Ok(Dialog {
            id: DialogId {
                call_id: invite.headers.call_id()?.to_owned(),
                local_tag: local_tag.to_owned(),
                remote_tag,
            },
            local,
            remote,
            local_seq,
            remote_seq: Some(invite.headers.cseq()?.seq),
            remote_target,
            route_set: invite
                .headers
                .values("Record-Route")
                .into_iter()
                .map(str::to_owned)
                .collect(),
        })
    }

    /// Does this in-dialog request from the peer belong to us?
    pub fn matches_request(&self, req: &Request) -> bool {
        let (Ok(call_id), Ok(from), Ok(to)) = (req.headers.call_id(), req.headers.from(), req.headers.to())
        else {
            return false;
        };
        call_id == self.id.call_id
            && to.tag() == Some(self.id.local_tag.as_str())
            && from.tag().unwrap_or_default() == self.id.remote_tag
    }

    /// A request from the far end in this dialog: false when its CSeq is not above
    /// the last one (out of order or replayed: answer 500); else it is the last one,
    /// and its Contact the new remote target (RFC 3261 §12.2.2).
    pub fn take_remote_request(&mut self, req: &Request) -> bool {
        let seq = req.headers.cseq().map(|c| c.seq).unwrap_or(0);
        if self.remote_seq.is_some_and(|r| seq <= r) {
            return false;
        }
        self.remote_seq = Some(seq);
        if let Some(c) = req.headers.contacts().ok().and_then(|c| c.into_iter().next()) {
            self.remote_target = c.uri;
        }
        true
    }

    /// Builds an in-dialog request. `cseq` is `None` to take the next local number
    /// (ACK and CANCEL reuse the INVITE's).
    pub fn request(
        &mut self,
        method: Method,
        cseq: Option<u32>,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) -> (Request, Target) {
        let seq = match cseq {
            Some(s) => s,
            None => {
                self.local_seq = self.local_seq.wrapping_add(1);
                self.local_seq
            }
        };
        let mut req = Request::new(method.clone(), self.remote_target.clone());
        req.headers.push(
            "Via",
            format!(
                "SIP/2.0/{} {}:{};branch={}{};rport",
                config.transport.via_name(),
                config.advertise_host,
                config.advertise_port,
                crate::transaction::MAGIC_COOKIE,
                crate::user_agent::random_token(rng, 20)
            ),
        );
        req.headers.push("Max-Forwards", "70");
        req.headers.push("From", self.local.to_string());
        req.headers.push("To", self.remote.to_string());
        req.headers.push("Call-ID", self.id.call_id.clone());
        req.headers.push(
            "CSeq",
            CSeq {
                seq,
                method: method.clone(),
            }
            .to_string(),
        );
        for r in &self.route_set {
            req.headers.push("Route", r.clone());
        }
        let target = self.next_hop(config);
        (req, target)
    }

    /// Where in-dialog requests go: the first route if it is a loose router, else the
    /// remote target (strict routers are long gone and not supported).
    pub fn next_hop(&self, config: &UaConfig) -> Target {
        let first_route = self
            .route_set
            .first()
            .and_then(|r| NameAddr::parse(r).ok())
            .map(|n| n.uri)
            .filter(|u| u.params.contains("lr"));
        let uri = first_route.as_ref().unwrap_or(&self.remote_target);
        uri_target(uri, config)
    }
}

/// The address a URI names, without DNS: an IP literal with its port (default: the
/// transport's) and its `transport` parameter (default: ours). With TLS toward the PBX
/// every request goes over TLS whatever a route or Contact says, so nobody can talk us
/// into sending a dialog in clear. A host name falls back to the outbound proxy or
/// registrar, which can resolve it.
pub fn uri_target(uri: &Uri, config: &UaConfig) -> Target {
    let host = uri.host.trim_start_matches('[').trim_end_matches(']');
    let transport = if config.transport == Transport::Tls || uri.scheme.eq_ignore_ascii_case("sips") {
        Transport::Tls
    } else {
        uri.transport_param()
            .and_then(|t| Transport::parse(&t))
            .unwrap_or(config.transport)
    };
    match host.parse::<IpAddr>() {
        Ok(ip) => Target {
            transport,
            addr: SocketAddr::new(ip, uri.port.unwrap_or(transport.default_port())),
        },
        Err(_) => config.next_hop(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn config() -> UaConfig {
        crate::user_agent::test_config()
    }

    fn parse_req(s: &str) -> Request {
        match Message::parse(s.as_bytes()).unwrap() {
            Message::Request(r) => r,
            _ => panic!(),
        }
    }

    fn parse_resp(s: &str) -> Response {
        match Message::parse(s.as_bytes()).unwrap() {
            Message::Response(r) => r,
            _ => panic!(),
        }
    }

    const INVITE: &str = "INVITE sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK1\r\n\
        From: <sip:880@127.0.0.1>;tag=ours\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 2 INVITE\r\n\
        Contact: <sip:880@127.0.0.1:5090>\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn uac_dialog_reverses_record_route_and_targets_the_contact() {
        let invite = parse_req(INVITE);
        let ok = parse_resp(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK1\r\n\
             Record-Route: <sip:127.0.0.1:5060;r2=on;lr>, <sip:127.0.0.1:5060;transport=tcp;r2=on;lr>\r\n\
             From: <sip:880@127.0.0.1>;tag=ours\r\nTo: <sip:1000@127.0.0.1>;tag=theirs\r\nCall-ID: c1\r\nCSeq: 2 INVITE\r\n\
             Contact: <sip:1000@127.0.0.1:5070;transport=udp>\r\nContent-Length: 0\r\n\r\n",
        );
        let mut d = Dialog::for_uac(&invite, &ok).unwrap();
        assert_eq!(d.id.remote_tag, "theirs");
        assert_eq!(d.route_set[0], "<sip:127.0.0.1:5060;transport=tcp;r2=on;lr>");
        let mut rng = fastrand::Rng::with_seed(1);
        let (ack, _) = d.request(Method::Ack, Some(2), &config(), &mut rng);
        assert_eq!(ack.uri.to_string(), "sip:1000@127.0.0.1:5070;transport=udp");
        assert_eq!(ack.headers.cseq().unwrap().seq, 2);
        let (bye, target) = d.request(Method::Bye, None, &config(), &mut rng);
        assert_eq!(bye.headers.cseq().unwrap().seq, 3);
        assert_eq!(bye.headers.get_all("Route").count(), 2);
        assert_eq!(bye.headers.to().unwrap().tag(), Some("theirs"));
        // the first route is TCP: that is where and how the BYE goes
        assert_eq!(target.transport, Transport::Tcp);
        assert_eq!(target.addr, "127.0.0.1:5060".parse().unwrap());
    }

    #[test]
    fn uas_dialog_matches_in_dialog_requests() {
        let mut invite = parse_req(INVITE);
        invite.headers.set("Record-Route", "<sip:127.0.0.1:5060;lr>");
        let d = Dialog::for_uas(&invite, "mine", 100).unwrap();
        assert_eq!(d.remote_target.to_string(), "sip:880@127.0.0.1:5090");
        assert_eq!(d.remote_seq, Some(2));
        let bye = parse_req(
            "BYE sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK9\r\n\
             From: <sip:880@127.0.0.1>;tag=ours\r\nTo: <sip:1000@127.0.0.1>;tag=mine\r\nCall-ID: c1\r\nCSeq: 3 BYE\r\n\r\n",
        );
        assert!(d.matches_request(&bye));
        let mut other = bye.clone();
        other.headers.set("To", "<sip:1000@127.0.0.1>;tag=nope");
        assert!(!d.matches_request(&other));
        assert_eq!(d.next_hop(&config()).addr, "127.0.0.1:5060".parse().unwrap());
    }

    #[test]
    fn with_tls_toward_the_pbx_nothing_is_sent_in_clear() {
        let uri = |s: &str| Uri::parse(s).unwrap();
        let mut tls = config();
        tls.transport = Transport::Tls;
        // a route or Contact asking for UDP or TCP still gets TLS; TLS's port by default
        for u in ["sip:10.0.0.9;transport=udp;lr", "sip:10.0.0.9;transport=tcp"] {
            let t = uri_target(&uri(u), &tls);
            assert_eq!(t.transport, Transport::Tls, "{u}");
            assert_eq!(t.addr, "10.0.0.9:5061".parse().unwrap(), "{u}");
        }
        let t = uri_target(&uri("sip:10.0.0.9:5071;transport=tls;lr"), &tls);
        assert_eq!(t.addr, "10.0.0.9:5071".parse().unwrap());
        // without TLS configured, a route's transport is followed; sips: means TLS
        let plain = config();
        assert_eq!(
            uri_target(&uri("sip:10.0.0.9;transport=tcp"), &plain).transport,
            Transport::Tcp
        );
        assert_eq!(
            uri_target(&uri("sips:10.0.0.9"), &plain).transport,
            Transport::Tls
        );
    }

    #[test]
    fn host_names_fall_back_to_the_proxy() {
        let t = uri_target(&Uri::parse("sip:x@pbx.example.com").unwrap(), &config());
        assert_eq!(t.addr, "127.0.0.1:5060".parse().unwrap());
    }
}
