//! Browser API v1: JSON-RPC 2.0 over the WebSocket at `/api/v1/ws`.
//!
//! Every message the browser and the gateway exchange is a type in this module, and
//! `docs/api.md` documents them; a test parses every example in that document into
//! these types, so the two cannot drift apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// JSON-RPC error codes.
pub mod codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    /// The request is well-formed but not possible now (e.g. `accept` with nothing ringing).
    pub const INVALID_STATE: i64 = -32000;
    /// Refused by a limit of the session (requests a second, ICE candidates).
    pub const LIMIT: i64 = -32001;
}

/// A request from the browser, with its params checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRequest {
    /// `ping {}` → `{}`: an application-level liveness check (browsers cannot send
    /// WebSocket pings).
    Ping,
    /// `getState {}` → [`StateSnapshot`].
    GetState,
    /// `call {number, headers?}` → `{callId}`; `headers` go on the INVITE (names from
    /// `headers.from_browser` only).
    Call {
        number: String,
        headers: BTreeMap<String, String>,
    },
    /// `accept {}` → `{}`: answer the ringing incoming call.
    Accept,
    /// `hangUp {code?}` → `{}`: cancel, reject (with `code`, default from the config)
    /// or end the call.
    HangUp {
        code: Option<u16>,
    },
    /// `offer {sdp}` → `{sdp}`: the browser's WebRTC offer, our answer.
    Offer {
        sdp: String,
    },
    /// `candidate {candidate}` → `{}`: a trickled ICE candidate of the browser.
    Candidate {
        candidate: String,
    },
    /// `dtmf {digits}` → `{}`: send DTMF into the call.
    Dtmf {
        digits: String,
    },
    /// `hold {}` / `unhold {}` → `{}`.
    Hold,
    Unhold,
    /// `transfer {callId?, number}` → `{}`: blind transfer (REFER) of the call to
    /// `number`; `transfer {callId?, toCallId}`: attended transfer to the far end of
    /// another call of the line (REFER with Replaces). Progress in `transferStateChanged`.
    Transfer {
        to: TransferTo,
    },
}

/// Where a `transfer` sends the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTo {
    Number(String),
    /// The far end of this call of the line (its `callId`).
    Call(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TransferParams {
    number: Option<String>,
    to_call_id: Option<String>,
}

impl TransferParams {
    fn target(self) -> Result<TransferTo, String> {
        match (self.number, self.to_call_id) {
            (Some(n), None) => Ok(TransferTo::Number(n)),
            (None, Some(c)) if c.len() <= 32 => Ok(TransferTo::Call(c)),
            (None, Some(_)) => Err("toCallId is too long".into()),
            _ => Err("give either number (blind transfer) or toCallId (attended)".into()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OfferParams {
    sdp: String,
    /// RTCSessionDescription.type, if the browser sends the whole object.
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CandidateParams {
    /// `candidate:…` (an RTCIceCandidate's `candidate`); empty for end-of-candidates.
    candidate: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DtmfParams {
    digits: String,
}

/// DTMF digits the API accepts.
pub use sipline_call::valid_dtmf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallParams {
    number: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HangUpParams {
    #[serde(default)]
    code: Option<u16>,
}

fn params<T: serde::de::DeserializeOwned>(params: Option<Value>) -> Result<T, String> {
    match params {
        Some(v @ Value::Object(_)) => serde_json::from_value(v).map_err(|e| e.to_string()),
        Some(other) => Err(format!("expected an object, got {other}")),
        None => serde_json::from_value(json!({})).map_err(|e| e.to_string()),
    }
}

/// The JSON-RPC envelope of a request, before its method is known.
#[derive(Debug, Deserialize)]
struct Envelope {
    jsonrpc: Option<String>,
    #[serde(default)]
    id: Option<Value>,
    method: Option<Value>,
    #[serde(default)]
    params: Option<Value>,
}

/// A parsed incoming frame: the request and its id (absent for notifications).
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub id: Option<Value>,
    pub request: ClientRequest,
    /// The call a request that acts on one names (`callId`, optional): it must be the
    /// line's call.
    pub call_id: Option<String>,
}

/// Requests that act on the line's call: each may name it with `callId`.
const CALL_REQUESTS: [&str; 6] = ["accept", "hangUp", "dtmf", "hold", "unhold", "transfer"];

/// Takes `callId` out of a request's params (the typed parsing never sees it).
fn take_call_id(params: &mut Option<Value>) -> Result<Option<String>, String> {
    let Some(Value::Object(map)) = params else {
        return Ok(None);
    };
    match map.remove("callId") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if id.len() <= 32 => Ok(Some(id)),
        Some(Value::String(_)) => Err("callId is too long".into()),
        Some(other) => Err(format!("callId must be a string, not {other}")),
    }
}

/// An error to send back, with the id of the request it answers (null if unknown).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub id: Value,
    pub error: RpcError,
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }

    /// The one mapping of a call's refusals to JSON-RPC errors: `what` is the request
    /// ("call", "hold"…).
    pub fn for_call(what: &str, error: &sipline_call::CallControlError) -> RpcError {
        use sipline_call::CallControlError as E;
        match error {
            E::CallLimit => RpcError::new(codes::LIMIT, format!("Limit: {error}")),
            E::NoSuchCall(_) | E::WhichCall => RpcError::new(
                codes::INVALID_PARAMS,
                format!("Invalid params for {what}: {error}"),
            ),
            _ => RpcError::new(codes::INVALID_STATE, format!("cannot {what}: {error}")),
        }
    }
}

/// Params of methods that take none: absent, `{}` or `[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

fn no_params(params: Option<Value>) -> Result<(), String> {
    match params {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(a)) if a.is_empty() => Ok(()),
        Some(v @ Value::Object(_)) => serde_json::from_value::<NoParams>(v)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Some(other) => Err(format!("expected an object, got {other}")),
    }
}

impl Incoming {
    /// Parses one text frame. Errors carry the JSON-RPC code the browser gets.
    pub fn parse(text: &str) -> Result<Incoming, Rejection> {
        let value: Value = serde_json::from_str(text).map_err(|e| Rejection {
            id: Value::Null,
            error: RpcError::new(codes::PARSE_ERROR, format!("Parse error: {e}")),
        })?;
        let invalid = |id: Value, why: &str| Rejection {
            id,
            error: RpcError::new(codes::INVALID_REQUEST, format!("Invalid Request: {why}")),
        };
        if !value.is_object() {
            return Err(invalid(
                Value::Null,
                "expected a JSON object (batches are not supported)",
            ));
        }
        let env: Envelope =
            serde_json::from_value(value).map_err(|e| invalid(Value::Null, &e.to_string()))?;
        let id = env.id.clone().unwrap_or(Value::Null);
        if !matches!(id, Value::Null | Value::String(_) | Value::Number(_)) {
            return Err(invalid(Value::Null, "id must be a string or a number"));
        }
        if env.jsonrpc.as_deref() != Some("2.0") {
            return Err(invalid(id, "jsonrpc must be \"2.0\""));
        }
        let Some(Value::String(method)) = env.method else {
            return Err(invalid(id, "method must be a string"));
        };
        let bad_params = |id: Value, why: String| Rejection {
            id,
            error: RpcError::new(
                codes::INVALID_PARAMS,
                format!("Invalid params for {method}: {why}"),
            ),
        };
        let mut params_in = env.params;
        let call_id = match CALL_REQUESTS.contains(&method.as_str()) {
            true => take_call_id(&mut params_in).map_err(|why| bad_params(id.clone(), why))?,
            false => None,
        };
        let env_params = params_in;
        let request = match method.as_str() {
            "ping" => no_params(env_params).map(|_| ClientRequest::Ping),
            "getState" => no_params(env_params).map(|_| ClientRequest::GetState),
            "call" => params::<CallParams>(env_params).map(|p| ClientRequest::Call {
                number: p.number,
                headers: p.headers,
            }),
            "accept" => no_params(env_params).map(|_| ClientRequest::Accept),
            "hangUp" => params::<HangUpParams>(env_params).and_then(|p| match p.code {
                Some(c) if !(400..=699).contains(&c) => {
                    Err(format!("code {c} is not a SIP status between 400 and 699"))
                }
                code => Ok(ClientRequest::HangUp { code }),
            }),
            "offer" => params::<OfferParams>(env_params).and_then(|p| match p.kind.as_deref() {
                None | Some("offer") if p.sdp.len() <= 64 * 1024 => Ok(ClientRequest::Offer { sdp: p.sdp }),
                None | Some("offer") => Err("sdp too large".into()),
                Some(other) => Err(format!("type must be \"offer\", not {other:?}")),
            }),
            "candidate" => params::<CandidateParams>(env_params).map(|p| ClientRequest::Candidate {
                candidate: p.candidate,
            }),
            "dtmf" => params::<DtmfParams>(env_params).and_then(|p| {
                if valid_dtmf(&p.digits) {
                    Ok(ClientRequest::Dtmf {
                        digits: p.digits.to_ascii_uppercase(),
                    })
                } else {
                    Err(format!("{:?} is not 1-64 DTMF digits (0-9 * # A-D)", p.digits))
                }
            }),
            "hold" => no_params(env_params).map(|_| ClientRequest::Hold),
            "unhold" => no_params(env_params).map(|_| ClientRequest::Unhold),
            "transfer" => params::<TransferParams>(env_params)
                .and_then(TransferParams::target)
                .map(|to| ClientRequest::Transfer { to }),
            _ => {
                return Err(Rejection {
                    id,
                    error: RpcError::new(codes::METHOD_NOT_FOUND, format!("Method not found: {method}")),
                });
            }
        }
        .map_err(|why| bad_params(id.clone(), why))?;
        Ok(Incoming {
            id: env.id,
            request,
            call_id,
        })
    }
}

/// `registrationStateChanged` states: was the browser given a line?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RegistrationState {
    Accepted,
    /// The session of a resume token, given back to a new WebSocket.
    Resumed,
    ConnectionLimit,
}

/// `phoneLineStateChanged` states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PhoneLineState {
    Registering,
    Registered,
    RegistrationFailed,
    Unregistering,
    Unregistered,
}

impl From<sipline_sip::LineState> for PhoneLineState {
    fn from(s: sipline_sip::LineState) -> Self {
        use sipline_sip::LineState as L;
        match s {
            L::Registering => PhoneLineState::Registering,
            L::Registered => PhoneLineState::Registered,
            L::RegistrationFailed => PhoneLineState::RegistrationFailed,
            L::Unregistering => PhoneLineState::Unregistering,
            L::Unregistered => PhoneLineState::Unregistered,
        }
    }
}

/// `callStateChanged` states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CallState {
    Dialing,
    Ringing,
    EarlyMedia,
    InCall,
    Held,
    Busy,
    Rejected,
    Cancelled,
    NoAnswer,
    Completed,
    Failed,
}

/// `transferStateChanged` states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TransferState {
    Trying,
    Ringing,
    Completed,
    Failed,
}

impl From<sipline_sip::TransferState> for TransferState {
    fn from(s: sipline_sip::TransferState) -> Self {
        use sipline_sip::TransferState as T;
        match s {
            T::Trying => TransferState::Trying,
            T::Ringing => TransferState::Ringing,
            T::Completed => TransferState::Completed,
            T::Failed => TransferState::Failed,
        }
    }
}

impl From<sipline_sip::CallState> for CallState {
    fn from(s: sipline_sip::CallState) -> Self {
        use sipline_sip::CallState as C;
        match s {
            C::Dialing => CallState::Dialing,
            C::Ringing => CallState::Ringing,
            C::EarlyMedia => CallState::EarlyMedia,
            C::InCall => CallState::InCall,
            C::Held => CallState::Held,
            C::Busy => CallState::Busy,
            C::Rejected => CallState::Rejected,
            C::Cancelled => CallState::Cancelled,
            C::NoAnswer => CallState::NoAnswer,
            C::Completed => CallState::Completed,
            C::Failed => CallState::Failed,
        }
    }
}

/// A notification from the gateway (no id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "method",
    content = "params",
    rename_all = "camelCase",
    deny_unknown_fields
)]
pub enum Notification {
    #[serde(rename_all = "camelCase")]
    RegistrationStateChanged {
        state: RegistrationState,
        /// With `accepted` and `resumed`: the single-use token that gets this session
        /// back after its WebSocket dropped (when resuming is on).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<String>,
        /// Seconds the session waits for that.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_window: Option<u64>,
    },
    #[serde(rename_all = "camelCase")]
    SipUserNameReceived {
        user: String,
        display_name: Option<String>,
        /// The numbers this gateway lets the browser dial, as a regular expression over
        /// the whole number (for the page to check as the user types; sipline enforces it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dial_pattern: Option<String>,
    },
    PhoneLineStateChanged {
        state: PhoneLineState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    IncomingCall {
        call_id: String,
        from: String,
        display_name: Option<String>,
        /// Headers of the INVITE named in `headers.to_browser`.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        /// The call it takes the place of (an attended transfer to this browser): it is
        /// answered at once and that call ends.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    CallStateChanged {
        call_id: String,
        state: CallState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    CallErrorOccurred {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u16>,
        reason: String,
    },
    /// The far end of `call_id` transferred us: sipline calls `number` as `new_call_id`.
    #[serde(rename_all = "camelCase")]
    CallReferred {
        call_id: String,
        new_call_id: String,
        number: String,
    },
    /// We put the call on hold or took it off (the browser asked, or it turned to
    /// another call on its line), and the far end agreed.
    #[serde(rename_all = "camelCase")]
    CallHoldChanged { call_id: String, on_hold: bool },
    #[serde(rename_all = "camelCase")]
    TransferStateChanged {
        call_id: String,
        state: TransferState,
        /// The SIP status it is based on (of the REFER, or of the new call).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u16>,
    },
    #[serde(rename_all = "camelCase")]
    DtmfReceived {
        call_id: String,
        digit: String,
        /// `rfc4733` (RTP telephone-event) or `info` (SIP INFO).
        method: DtmfMethod,
    },
    #[serde(rename_all = "camelCase")]
    CallStats {
        call_id: String,
        /// The WebRTC leg (browser ⇄ sipline).
        browser: LegStats,
        /// The RTP leg (sipline ⇄ far end).
        sip: LegStats,
    },
}

/// How a DTMF digit arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtmfMethod {
    Rfc4733,
    Info,
}

impl From<sipline_call::DtmfMethod> for DtmfMethod {
    fn from(m: sipline_call::DtmfMethod) -> Self {
        match m {
            sipline_call::DtmfMethod::Rfc4733 => DtmfMethod::Rfc4733,
            sipline_call::DtmfMethod::Info => DtmfMethod::Info,
        }
    }
}

/// Statistics of one media leg, as `callStats` reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LegStats {
    pub codec: Option<String>,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// Packets the far side of this leg sent that never arrived.
    pub packets_lost: u64,
    /// Fraction lost (0-1) over the last interval.
    pub loss: f64,
    /// Interarrival jitter, milliseconds.
    pub jitter_ms: f64,
    /// Round-trip time from RTCP, milliseconds, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
}

impl Notification {
    /// The method names, for the documentation check.
    pub const METHODS: &'static [&'static str] = &[
        "registrationStateChanged",
        "sipUserNameReceived",
        "phoneLineStateChanged",
        "incomingCall",
        "callStateChanged",
        "callErrorOccurred",
        "dtmfReceived",
        "callStats",
        "transferStateChanged",
        "callHoldChanged",
        "callReferred",
    ];

    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(o) = &mut v {
            o.insert("jsonrpc".into(), json!("2.0"));
        }
        v.to_string()
    }
}

/// The result of `getState`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateSnapshot {
    pub user: String,
    pub display_name: Option<String>,
    pub line: PhoneLineState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The call the browser talks in (else the latest), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<CallSnapshot>,
    /// Every call of the line, oldest first (more than one with call waiting).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<CallSnapshot>,
}

/// A call as `getState` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallSnapshot {
    pub call_id: String,
    pub state: CallState,
    /// The other party's number.
    pub peer: String,
    pub incoming: bool,
    /// We hold the far end.
    #[serde(default)]
    pub on_hold: bool,
}

/// A successful response frame.
pub fn result_json(id: &Value, result: Value) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "result": result }).to_string()
}

/// An error response frame.
pub fn error_json(id: &Value, error: &RpcError) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "error": error }).to_string()
}

/// Any frame the gateway sends, for checking documentation examples.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrame {
    Notification(Notification),
    Result { id: Value, result: Value },
    Error { id: Value, error: RpcError },
}

impl ServerFrame {
    pub fn parse(text: &str) -> Result<ServerFrame, String> {
        let mut v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let o = v.as_object_mut().ok_or("not an object")?;
        if o.remove("jsonrpc") != Some(json!("2.0")) {
            return Err("jsonrpc must be \"2.0\"".into());
        }
        if let Some(result) = o.remove("result") {
            let id = o.remove("id").ok_or("result without id")?;
            return Ok(ServerFrame::Result { id, result });
        }
        if let Some(error) = o.remove("error") {
            let id = o.remove("id").ok_or("error without id")?;
            let error = serde_json::from_value(error).map_err(|e| e.to_string())?;
            return Ok(ServerFrame::Error { id, error });
        }
        serde_json::from_value(v)
            .map(ServerFrame::Notification)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_classifies_errors() {
        let ok = Incoming::parse(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).unwrap();
        assert_eq!(ok.request, ClientRequest::Ping);
        assert_eq!(ok.id, Some(json!(1)));
        let ok = Incoming::parse(r#"{"jsonrpc":"2.0","id":"a","method":"getState","params":{}}"#).unwrap();
        assert_eq!(ok.request, ClientRequest::GetState);
        let code = |t: &str| Incoming::parse(t).unwrap_err().error.code;
        assert_eq!(code("{not json"), codes::PARSE_ERROR);
        assert_eq!(code("[1,2]"), codes::INVALID_REQUEST);
        assert_eq!(code(r#"{"id":1,"method":"ping"}"#), codes::INVALID_REQUEST);
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":5}"#),
            codes::INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#),
            codes::INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"fly"}"#),
            codes::METHOD_NOT_FOUND
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#),
            codes::INVALID_PARAMS
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":1}}"#),
            codes::INVALID_PARAMS
        );
        // the id of a bad request is echoed when it can be read
        assert_eq!(
            Incoming::parse(r#"{"jsonrpc":"2.0","id":7,"method":"fly"}"#)
                .unwrap_err()
                .id,
            json!(7)
        );
    }

    /// A request id is echoed as the client wrote it, even a number with more digits than
    /// a double holds: it parses into the nearest double, which is written back in a form
    /// that parses into the same double. Without serde_json's `float_roundtrip` this id
    /// came back as 1.1111111111111112e73 (found by the `jsonrpc` fuzz target).
    #[test]
    fn long_number_ids_are_echoed_exactly() {
        let digits = format!("{}0", "1".repeat(73));
        let frame = format!(r#"{{"jsonrpc":"2.0","id":{digits},"method":"ping"}}"#);
        let id = Incoming::parse(&frame).unwrap().id.unwrap();
        assert_eq!(id.as_f64(), Some(digits.parse::<f64>().unwrap()));
        let answer = result_json(&id, json!({}));
        assert_eq!(
            ServerFrame::parse(&answer).unwrap(),
            ServerFrame::Result {
                id,
                result: json!({})
            }
        );
    }

    #[test]
    fn call_requests() {
        let code = |t: &str| Incoming::parse(t).unwrap_err().error.code;
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"call"}"#),
            codes::INVALID_PARAMS
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"call","params":{"number":5}}"#),
            codes::INVALID_PARAMS
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"hangUp","params":{"code":200}}"#),
            codes::INVALID_PARAMS
        );
        let call = Incoming::parse(r#"{"jsonrpc":"2.0","id":2,"method":"call","params":{"number":"1000"}}"#)
            .unwrap();
        assert_eq!(
            call.request,
            ClientRequest::Call {
                number: "1000".into(),
                headers: BTreeMap::new(),
            }
        );
        let hang = Incoming::parse(r#"{"jsonrpc":"2.0","id":3,"method":"hangUp"}"#).unwrap();
        assert_eq!(hang.request, ClientRequest::HangUp { code: None });
        // requests that act on a call may name it; others may not have a callId
        let hold =
            Incoming::parse(r#"{"jsonrpc":"2.0","id":4,"method":"hold","params":{"callId":"7"}}"#).unwrap();
        assert_eq!(
            (hold.request, hold.call_id.as_deref()),
            (ClientRequest::Hold, Some("7"))
        );
        let hang = Incoming::parse(
            r#"{"jsonrpc":"2.0","id":5,"method":"hangUp","params":{"callId":"7","code":603}}"#,
        )
        .unwrap();
        assert_eq!(hang.request, ClientRequest::HangUp { code: Some(603) });
        assert_eq!(hang.call_id.as_deref(), Some("7"));
        for bad in [
            r#"{"jsonrpc":"2.0","id":6,"method":"accept","params":{"callId":7}}"#,
            r#"{"jsonrpc":"2.0","id":6,"method":"ping","params":{"callId":"7"}}"#,
        ] {
            assert_eq!(code(bad), codes::INVALID_PARAMS, "{bad}");
        }
    }

    #[test]
    fn notifications_serialise_as_json_rpc() {
        let n = Notification::PhoneLineStateChanged {
            state: PhoneLineState::RegistrationFailed,
            code: Some(403),
            reason: Some("Forbidden".into()),
        };
        let text = n.to_json();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","method":"phoneLineStateChanged","params":{"state":"registrationFailed","code":403,"reason":"Forbidden"}})
        );
        assert_eq!(ServerFrame::parse(&text).unwrap(), ServerFrame::Notification(n));
        let u = Notification::SipUserNameReceived {
            user: "880".into(),
            display_name: None,
            dial_pattern: None,
        };
        assert!(u.to_json().contains("\"displayName\":null"));
    }

    /// Every JSON example in docs/api.md parses into these types, and every
    /// notification these types define is documented.
    #[test]
    fn api_document_matches_the_types() {
        let doc = include_str!("../../../docs/api.md");
        let mut examples = 0;
        // client frames meant to fail (their id says "invalid"), with the code they got
        let mut refused: Vec<(Value, i64, String)> = Vec::new();
        // the documented error answers, by id
        let mut documented_errors: Vec<(Value, i64)> = Vec::new();
        let mut lines = doc.lines();
        while let Some(line) = lines.next() {
            let kind = match line.trim() {
                "```json client" => "client",
                "```json server" => "server",
                _ => continue,
            };
            let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            for frame in block.iter().filter(|l| !l.trim().is_empty()) {
                examples += 1;
                match (kind, Incoming::parse(frame)) {
                    ("client", Ok(_)) if frame.contains("invalid") => {
                        panic!("{frame}: documented as refused, but accepted")
                    }
                    ("client", Ok(_)) => {}
                    ("client", Err(e)) if frame.contains("invalid") => {
                        refused.push((e.id, e.error.code, frame.to_string()));
                    }
                    ("client", Err(e)) => panic!("{frame}: {e:?}"),
                    _ => {
                        let parsed = ServerFrame::parse(frame).unwrap_or_else(|e| panic!("{frame}: {e}"));
                        if let ServerFrame::Error { id, error } = parsed {
                            documented_errors.push((id, error.code));
                        }
                    }
                }
            }
        }
        assert!(!refused.is_empty(), "no example of a refused request");
        for (id, code, frame) in refused {
            assert!(
                documented_errors.contains(&(id.clone(), code)),
                "{frame} is refused with {code}, but docs/api.md shows no such answer for id {id}"
            );
        }
        assert!(examples >= 10, "only {examples} examples found");
        for m in Notification::METHODS {
            assert!(
                doc.contains(&format!("\"method\":\"{m}\"")),
                "{m} has no example in docs/api.md"
            );
        }
    }
}
