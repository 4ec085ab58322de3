//! The browser API client of one session (docs/api.md): JSON-RPC 2.0 over the
//! WebSocket on `/api/v1/ws`, as `web/sipline.js` speaks it. Every frame that arrives
//! is folded into [`LineState`] (admission, account, line, call, `callStats`) with the
//! time it arrived, and the session's media events are taken in the same loop, so a
//! session is one linear sequence of "send this, wait until that holds".

use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::webrtc::MediaEvent;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Call states after which the line is free again.
pub const FINAL_CALL_STATES: [&str; 6] = ["busy", "rejected", "cancelled", "noAnswer", "completed", "failed"];

/// Everything the gateway said so far, as it stands.
#[derive(Debug, Default, Clone)]
pub struct LineState {
    /// `registrationStateChanged`: "accepted" or "connectionLimit".
    pub admission: Option<String>,
    /// The leased account (`sipUserNameReceived`).
    pub user: Option<String>,
    /// The line's registration state, and the SIP status behind it ("403 Forbidden").
    pub line: Option<String>,
    pub line_status: Option<String>,
    pub call_id: Option<String>,
    /// The call's latest state.
    pub call_state: Option<String>,
    pub in_call_at: Option<Instant>,
    /// The final state, with its status and reason ("failed 404 Not Found").
    pub call_final: Option<String>,
    pub call_errors: Vec<String>,
    /// The last `callStats` params.
    pub call_stats: Option<Value>,
    pub call_stats_count: u32,
    /// The WebRTC connection: Some(Ok) once connected, Some(Err) if it failed.
    pub webrtc: Option<Result<(), String>>,
    /// The socket was closed (by the gateway, or broke), and why.
    pub closed: Option<String>,
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    Met,
    Deadline,
    Closed(String),
}

/// One session's WebSocket.
pub struct Signalling {
    ws: Ws,
    next_id: u64,
    /// The response to the request in flight, once it arrived.
    response: Option<(u64, Value)>,
    media: Option<mpsc::UnboundedReceiver<MediaEvent>>,
    pub state: LineState,
}

impl Signalling {
    pub async fn connect(url: &str, token: Option<&str>) -> Result<Signalling, String> {
        let mut request = url.into_client_request().map_err(|e| format!("bad --url: {e}"))?;
        if let Some(t) = token {
            let value =
                HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| "bad --token".to_owned())?;
            request.headers_mut().insert("Authorization", value);
        }
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| format!("WebSocket: {e}"))?;
        Ok(Signalling {
            ws,
            next_id: 1,
            response: None,
            media: None,
            state: LineState::default(),
        })
    }

    /// Takes the media task's events into the same loop as the frames.
    pub fn attach_media(&mut self, events: mpsc::UnboundedReceiver<MediaEvent>) {
        self.media = Some(events);
    }

    /// Sends a request and waits for its response: `Ok(result)` or `Err(message)`.
    pub async fn request(&mut self, method: &str, params: Value, deadline: Instant) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .map_err(|e| format!("{method}: WebSocket: {e}"))?;
        let answered = |s: &Signalling| s.response.as_ref().is_some_and(|(i, _)| *i == id);
        loop {
            if answered(self) {
                break;
            }
            match self.pump(deadline).await {
                Wait::Met => {}
                Wait::Deadline => return Err(format!("{method}: no response")),
                Wait::Closed(why) => return Err(format!("{method}: {why}")),
            }
        }
        let (_, v) = self.response.take().unwrap_or_default();
        match v.get("result") {
            Some(r) => Ok(r.clone()),
            None => Err(format!(
                "{method} refused: {}",
                v["error"]["message"].as_str().unwrap_or("no result")
            )),
        }
    }

    /// Handles frames and media events until `pred` holds, the deadline passes or the
    /// socket closes.
    pub async fn wait_until(&mut self, deadline: Instant, pred: impl Fn(&LineState) -> bool) -> Wait {
        loop {
            if pred(&self.state) {
                return Wait::Met;
            }
            match self.pump(deadline).await {
                Wait::Met => {}
                other => return other,
            }
        }
    }

    /// Handles one frame or media event (`Met`), or reports the deadline or the close.
    async fn pump(&mut self, deadline: Instant) -> Wait {
        if let Some(why) = &self.state.closed {
            return Wait::Closed(why.clone());
        }
        let media = async {
            match self.media.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            frame = self.ws.next() => {
                match frame {
                    Some(Ok(Message::Text(t))) => {
                        if let Ok(v) = serde_json::from_str::<Value>(t.as_str()) {
                            self.on_frame(v);
                        }
                        Wait::Met
                    }
                    Some(Ok(Message::Close(c))) => {
                        let why = match c {
                            Some(c) => format!("closed by the gateway ({} {})", u16::from(c.code), c.reason),
                            None => "closed by the gateway".to_owned(),
                        };
                        self.state.closed = Some(why.clone());
                        Wait::Closed(why)
                    }
                    Some(Ok(_)) => Wait::Met,
                    Some(Err(e)) => {
                        let why = format!("WebSocket: {e}");
                        self.state.closed = Some(why.clone());
                        Wait::Closed(why)
                    }
                    None => {
                        self.state.closed = Some("WebSocket closed".into());
                        Wait::Closed("WebSocket closed".into())
                    }
                }
            }
            ev = media => {
                match ev {
                    Some(MediaEvent::Connected) => self.state.webrtc = Some(Ok(())),
                    Some(MediaEvent::Failed(why)) => self.state.webrtc = Some(Err(why)),
                    None => self.media = None,
                }
                Wait::Met
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => Wait::Deadline,
        }
    }

    fn on_frame(&mut self, v: Value) {
        if let Some(id) = v.get("id").and_then(Value::as_u64) {
            self.response = Some((id, v));
            return;
        }
        let p = &v["params"];
        let s = &mut self.state;
        let text = |k: &str| p[k].as_str().map(str::to_owned);
        let status = || {
            let code = p["code"].as_u64().map(|c| c.to_string());
            let reason = p["reason"].as_str().map(str::to_owned);
            match (code, reason) {
                (Some(c), Some(r)) => Some(format!("{c} {r}")),
                (Some(c), None) => Some(c),
                (None, r) => r,
            }
        };
        match v["method"].as_str().unwrap_or_default() {
            "registrationStateChanged" => s.admission = text("state"),
            "sipUserNameReceived" => s.user = text("user"),
            "phoneLineStateChanged" => {
                s.line = text("state");
                s.line_status = status();
            }
            "callStateChanged" => {
                let state = text("state").unwrap_or_default();
                if state == "inCall" && s.in_call_at.is_none() {
                    s.in_call_at = Some(Instant::now());
                }
                if FINAL_CALL_STATES.contains(&state.as_str()) {
                    s.call_final = Some(match status() {
                        Some(st) => format!("{state} ({st})"),
                        None => state.clone(),
                    });
                }
                s.call_state = Some(state);
            }
            "callErrorOccurred" => {
                if let Some(r) = status() {
                    s.call_errors.push(r);
                }
            }
            "callStats" => {
                s.call_stats = Some(p.clone());
                s.call_stats_count += 1;
            }
            _ => {}
        }
    }

    /// Closes the socket cleanly and waits (a little) for the gateway's close.
    pub async fn close(&mut self) {
        if self.state.closed.is_some() {
            return;
        }
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
        self.state.closed = Some("closed by us".into());
    }
}
