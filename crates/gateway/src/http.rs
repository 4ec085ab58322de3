//! The HTTP side: the phone page (`assets`), the browser API's WebSocket (`/api/v1/ws`) and
//! `/metrics`, with the access rules: a configured token is required when set
//! (always when listening beyond loopback), and browsers may only connect from the
//! page's own origin, so that no other web site can place calls through sipline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{ConnectInfo, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::session::{self, Gateway};

/// Largest JSON-RPC frame a browser may send.
const MAX_FRAME: usize = 64 * 1024;
/// WebSocket read and write buffers: a notification is a few hundred bytes.
const WS_BUFFER: usize = 8 * 1024;
/// What may wait to be written to a browser that does not read (then the session ends).
const WS_MAX_WRITE_BUFFER: usize = 1024 * 1024;

pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/api/v1/ws", get(ws_upgrade))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/cluster", get(cluster_status))
        .fallback(get(crate::assets::serve))
        .with_state(gw)
}

/// A 401 unless the request carries a configured token (for the operator endpoints).
fn refused_without_token(
    gw: &Gateway,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Option<Response> {
    (!token_ok(gw, headers, query))
        .then(|| (StatusCode::UNAUTHORIZED, "missing or wrong token\n").into_response())
}

/// Constant-time comparison of a presented token with the configured ones.
fn token_ok(gw: &Gateway, headers: &HeaderMap, query: &HashMap<String, String>) -> bool {
    if gw.settings.tokens.is_empty() {
        return true;
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .or_else(|| query.get("token").map(String::as_str));
    let Some(presented) = presented else {
        return false;
    };
    gw.settings.tokens.iter().fold(false, |ok, t| {
        let same = t.len() == presented.len()
            && t.bytes()
                .zip(presented.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        ok | same
    })
}

/// Browsers always send Origin on a WebSocket; it must be the page's own host.
/// Clients that are not browsers send none and are judged by the token alone.
fn origin_ok(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    origin_host.eq_ignore_ascii_case(host)
}

async fn ws_upgrade(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    if !token_ok(&gw, &headers, &query) {
        tracing::warn!(%peer, "WebSocket refused: missing or wrong token");
        return (StatusCode::UNAUTHORIZED, "missing or wrong token\n").into_response();
    }
    if !origin_ok(&headers) {
        tracing::warn!(%peer, origin = ?headers.get(header::ORIGIN), "WebSocket refused: foreign origin");
        return (
            StatusCode::FORBIDDEN,
            "cross-origin connections are not allowed\n",
        )
            .into_response();
    }
    let resume = query.get("resume").cloned();
    ws.max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        // tungstenite's defaults (128 KiB buffers, an unbounded write buffer) would make
        // an idle session cost hundreds of KiB; frames here are small
        .read_buffer_size(WS_BUFFER)
        .write_buffer_size(WS_BUFFER)
        .max_write_buffer_size(WS_MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            // a resume token leads to its own session, or (unknown, used or expired)
            // nowhere: then this is a new browser like any other. Taken only once the
            // upgrade succeeded, so a failed one does not use it up.
            let Some((session, token)) = resume.and_then(|token| {
                let found = gw.resumes.take(&token);
                if found.is_none() {
                    crate::counters::inc(crate::counters::Counter::ResumeToken);
                    crate::peer_warn!(crate::peer_log::Kind::Browser, %peer, "unknown resume token: admitted as a new session");
                }
                found.map(|s| (s, token))
            }) else {
                return session::run(socket, gw, peer).await;
            };
            if let Err(back) = session.send(crate::resume::Rejoin { socket, peer, token }).await {
                // the session ended between the token and the upgrade: start afresh
                session::run(back.0.socket, gw, peer).await;
            }
        })
}

/// Liveness for load balancers and orchestrators: 200 while the process and its SIP
/// task run (draining included). No token: it tells nothing.
async fn healthz(State(gw): State<Arc<Gateway>>) -> Response {
    match gw.sip.stats().await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "SIP task gone\n").into_response(),
    }
}

/// Readiness: 200 while a new browser would be admitted; 503 while draining, or with
/// every account held and none on its way back, or at the session limit.
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if !gw.admitting() {
        (StatusCode::SERVICE_UNAVAILABLE, "no free line\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

/// The shared pool as Redis has it: every node's heartbeat and every lease (node and
/// fencing token), plus this node's view. Same token as `/metrics`; 404 without `[cluster]`.
async fn cluster_status(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = refused_without_token(&gw, &headers, &query) {
        return refused;
    }
    let Some(cluster) = gw.pool.cluster() else {
        return (
            StatusCode::NOT_FOUND,
            "not clustered: no [cluster] redis configured\n",
        )
            .into_response();
    };
    let this = serde_json::json!({
        "node": cluster.settings.node,
        "leased": gw.pool.leased_users(),
        "redisUp": cluster.stats.redis_up.load(Ordering::Relaxed),
        "settling": cluster.stats.settling.load(Ordering::Relaxed),
    });
    match cluster.status().await {
        Ok(mut status) => {
            status["self"] = this;
            axum::Json(status).into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "self": this, "error": e })),
        )
            .into_response(),
    }
}

/// Prometheus text format: the counts a leak test or a dashboard needs.
async fn metrics(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = refused_without_token(&gw, &headers, &query) {
        return refused;
    }
    let Ok(stats) = gw.sip.stats().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    };
    let gauges: [(&str, &str, usize); 10] = [
        ("sipline_pool_accounts", "Accounts in the pool.", gw.pool.size()),
        (
            "sipline_pool_leased",
            "Accounts leased to browser sessions.",
            gw.pool.leased(),
        ),
        (
            "sipline_sessions",
            "Open browser sessions.",
            gw.sessions.load(Ordering::Relaxed),
        ),
        (
            "sipline_sessions_away",
            "Sessions whose browser is gone without a close, waiting to be resumed.",
            gw.away.load(Ordering::Relaxed),
        ),
        (
            "sipline_sip_lines",
            "Lines (accounts) the SIP user agent hosts.",
            stats.ua.lines,
        ),
        (
            "sipline_sip_calls",
            "Calls, including those still winding down.",
            stats.ua.calls,
        ),
        (
            "sipline_sip_dialogs",
            "Established SIP dialogs.",
            stats.ua.dialogs,
        ),
        (
            "sipline_sip_client_transactions",
            "Live SIP client transactions.",
            stats.ua.client_transactions,
        ),
        (
            "sipline_sip_server_transactions",
            "Live SIP server transactions.",
            stats.ua.server_transactions,
        ),
        (
            "sipline_rtp_ports_in_use",
            "RTP/RTCP port pairs held by calls.",
            stats.rtp_ports_in_use,
        ),
    ];
    let mut body = String::new();
    for (name, help, value) in gauges {
        body.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    }
    if let Some(pbx) = &gw.pbx {
        let n = pbx.registrations.load(Ordering::Relaxed);
        body.push_str(&format!(
            "# HELP sipline_pbx_registrations Registrations at the embedded PBX.\n\
             # TYPE sipline_pbx_registrations gauge\nsipline_pbx_registrations {n}\n"
        ));
    }
    if let Some(http) = &gw.http_connections {
        body.push_str(&format!(
            "# HELP sipline_http_connections Open HTTP connections, WebSockets included.\n\
             # TYPE sipline_http_connections gauge\nsipline_http_connections {}\n",
            http.open()
        ));
    }
    body.push_str(&format!(
        "# HELP sipline_sessions_resumed_total Sessions given back to a browser that came back with its token.\n\
         # TYPE sipline_sessions_resumed_total counter\nsipline_sessions_resumed_total {}\n",
        gw.resumed.load(Ordering::Relaxed)
    ));
    let received = crate::media::RTP_PACKETS_RECEIVED.load(Ordering::Relaxed);
    body.push_str(&format!(
        "# HELP sipline_rtp_packets_received_total RTP packets received on call ports.\n\
         # TYPE sipline_rtp_packets_received_total counter\nsipline_rtp_packets_received_total {received}\n"
    ));
    if let Some(cluster) = gw.pool.cluster() {
        body.push_str(&cluster.stats.prometheus());
    }
    write_protection_counters(&mut body, &stats.ua.counters);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// `sipline_refused_total{limit}` and `sipline_dropped_total{what}`: the gateway's own
/// counters and the SIP core's.
fn write_protection_counters(body: &mut String, ua: &sipline_sip::UaCounters) {
    use crate::counters::{Counter, Family};
    let sip = [
        (Family::Refused, "sip_untrusted_source", ua.untrusted_refused),
        (Family::Refused, "sip_server_transactions", ua.transaction_limit),
        (Family::Refused, "sip_requests_in_flight", ua.requests_in_flight),
        (Family::Dropped, "sip_stateless_rate", ua.stateless_rate_limited),
        (Family::Dropped, "sip_unparsable", ua.unparsable),
        (Family::Dropped, "sip_invalid_request", ua.invalid_requests),
        (Family::Dropped, "sip_stray_response", ua.stray_responses),
    ];
    let ours = Counter::ALL.map(|c| {
        let (family, label) = c.name();
        (family, label, crate::counters::get(c))
    });
    for family in [Family::Refused, Family::Dropped] {
        let name = family.metric();
        body.push_str(&format!(
            "# HELP {name} {}\n# TYPE {name} counter\n",
            family.help()
        ));
        for (_, label, value) in ours.iter().chain(sip.iter()).filter(|(f, ..)| *f == family) {
            body.push_str(&format!("{name}{{{}=\"{label}\"}} {value}\n", family.label()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn origin_must_match_host() {
        let mut h = HeaderMap::new();
        assert!(origin_ok(&h), "non-browser clients send no Origin");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(origin_ok(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!origin_ok(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!origin_ok(&h));
    }
}
