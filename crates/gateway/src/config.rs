//! sipline's configuration: the TOML file (`sipline --config PATH`), its defaults,
//! environment overrides for secrets, and the checks that turn a bad file into one
//! clear start-up error naming the key and the problem.
//!
//! Every key is documented in `sipline.example.toml`; a test keeps that file loadable.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use sipline_media::sdp::Codec as MediaCodec;
use sipline_sip::message::Uri;
use sipline_sip::session_timer::SessionTimerConfig;
use sipline_sip::transaction::Timers;
use sipline_sip::{Account, Target, Transport, UaConfig};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub sip: SipConfig,
    pub pbx: PbxConfig,
    pub pool: PoolConfig,
    pub calls: CallsConfig,
    pub media: MediaConfig,
    pub cluster: ClusterConfig,
    pub headers: HeadersConfig,
}

impl Default for Config {
    /// With no file: a local PBX on 127.0.0.1:5060 and the original example's pool
    /// (accounts 880–898, password = user name).
    fn default() -> Config {
        Config {
            http: HttpConfig::default(),
            sip: SipConfig::default(),
            pbx: PbxConfig::default(),
            pool: PoolConfig {
                range: Some(AccountRange { from: 880, to: 898 }),
                ..PoolConfig::default()
            },
            calls: CallsConfig::default(),
            media: MediaConfig::default(),
            cluster: ClusterConfig::default(),
            headers: HeadersConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where the page and `/api/v1/ws` are served.
    pub listen: SocketAddr,
    /// Bearer tokens a browser must present; required when `listen` is not loopback.
    pub tokens: Vec<String>,
    /// Seconds between WebSocket pings.
    pub ws_ping_interval: f64,
    /// Seconds without any frame from the browser after which it counts as gone.
    pub ws_idle_timeout: f64,
    /// Seconds a session (lease, line, call) waits for its browser to come back with its
    /// resume token after the WebSocket went away without a close; 0: it ends at once.
    pub resume_window: f64,
    /// PEM certificate chain and private key: serve HTTPS (browsers only allow the
    /// microphone on https:// or localhost).
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// HTTP connections open at once (WebSockets included), and from one IP address.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Seconds a client has to finish a request's headers (and a TLS handshake); also
    /// how long an idle keep-alive connection is kept.
    pub header_timeout: f64,
    /// Browser sessions (WebSockets) open at once on this node, and from one IP address.
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    /// Seconds calls may go on after SIGTERM (no new sessions meanwhile) before the
    /// rest are ended and every line unregistered.
    pub drain_timeout: f64,
    /// Seconds a session may last before it is closed (once no call runs); 0: no limit.
    pub max_session_length: f64,
    /// JSON-RPC requests a session may send a second on average, and in a burst.
    pub requests_per_second: f64,
    pub request_burst: u32,
    /// ICE candidates one session may send.
    pub max_candidates: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tokens: Vec::new(),
            ws_ping_interval: 10.0,
            ws_idle_timeout: 25.0,
            resume_window: 30.0,
            tls_cert: None,
            tls_key: None,
            max_connections: 2048,
            max_connections_per_ip: 256,
            header_timeout: 10.0,
            max_sessions: 10_000,
            max_sessions_per_ip: 8,
            drain_timeout: 30.0,
            max_session_length: 0.0,
            requests_per_second: 20.0,
            request_burst: 50,
            max_candidates: 64,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    pub listen: SocketAddr,
    pub advertise: Option<String>,
    pub transport: String,
    /// The PBX; without one, sipline runs its embedded PBX (see [`PbxConfig`]).
    pub registrar: Option<String>,
    pub outbound_proxy: Option<String>,
    pub expires: u32,
    /// Seconds between OPTIONS pings to the registrar; 0 turns them off.
    pub keepalive_interval: f64,
    /// Seconds a ping may go unanswered before the PBX counts as down.
    pub keepalive_timeout: f64,
    /// First and longest pause before re-registering after a failure, seconds.
    pub retry_min: f64,
    pub retry_max: f64,
    pub user_agent: String,
    /// Besides the registrar and the outbound proxy, sources whose out-of-dialog
    /// requests (calls to our lines) are served: "10.0.0.5", "10.0.0.5:5060", "10.0.0.0/24".
    pub trusted_sources: Vec<String>,
    /// SIP server transactions alive at once; beyond, requests get a 503.
    pub max_server_transactions: usize,
    /// Answers sent without a transaction (403, 481, 400, 503) per second; beyond,
    /// such requests go unanswered.
    pub stateless_rate: u32,
    /// SIP-TCP connections others open to us, in all and from one IP address.
    pub tcp_max_connections: usize,
    pub tcp_max_connections_per_ip: usize,
    /// Seconds an accepted SIP-TCP connection may stay silent.
    pub tcp_idle_timeout: f64,
    /// Seconds to finish a SIP message on a stream once begun (and to write one).
    pub tcp_message_timeout: f64,
    /// Bytes that may wait to be written to one SIP-TCP peer; a peer that does not
    /// read beyond that is disconnected.
    pub tcp_send_queue_bytes: usize,
    /// With `transport = "tls"`: a PEM file of the CAs the PBX's certificate must chain
    /// to (default: the system's roots).
    pub tls_ca: Option<std::path::PathBuf>,
    /// The name the PBX's certificate must be for, and sent as SNI (default: the host
    /// of `registrar`, or of `outbound_proxy` when there is one).
    pub tls_server_name: Option<String>,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5090)),
            advertise: None,
            transport: "udp".into(),
            registrar: None,
            outbound_proxy: None,
            expires: 600,
            keepalive_interval: 10.0,
            keepalive_timeout: 4.0,
            retry_min: 5.0,
            retry_max: 300.0,
            user_agent: concat!("sipline/", env!("CARGO_PKG_VERSION")).into(),
            trusted_sources: Vec::new(),
            max_server_transactions: 4096,
            stateless_rate: 200,
            tcp_max_connections: 1024,
            tcp_max_connections_per_ip: 64,
            tcp_idle_timeout: 180.0,
            tcp_message_timeout: 10.0,
            tcp_send_queue_bytes: 1 << 20,
            tls_ca: None,
            tls_server_name: None,
        }
    }
}

/// The embedded PBX, used when no `sip.registrar` is configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PbxConfig {
    /// Where it listens: a loopback address only.
    pub listen: SocketAddr,
    /// Run the built-in extensions 600 (echo), 601 (test signal), 602 (DTMF echo).
    pub extensions: bool,
    /// Extra users, for SIP phones on this machine (baresip, a softphone).
    pub users: Vec<AccountConfig>,
}

impl Default for PbxConfig {
    fn default() -> Self {
        PbxConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            extensions: true,
            users: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    pub domain: Option<String>,
    pub range: Option<AccountRange>,
    pub accounts: Vec<AccountConfig>,
    /// Seconds a browser that finds no free account waits for one that is being
    /// released (a page reload); 0 refuses at once.
    pub admission_wait: f64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            domain: None,
            range: None,
            accounts: Vec::new(),
            admission_wait: 10.0,
        }
    }
}

/// `[cluster]`: nodes sharing the account pool through Redis.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT[/DB]`; none: the pool lives in this process.
    pub redis: Option<String>,
    /// This node's name, unique in the cluster (default: host name and HTTP port).
    pub node: Option<String>,
    /// Seconds a lease lives in Redis without being renewed.
    pub lease_ttl: f64,
    /// Prefix of every Redis key (several clusters may share one Redis).
    pub key_prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis: None,
            node: None,
            lease_ttl: 15.0,
            key_prefix: "sipline".into(),
        }
    }
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis", &self.redis.as_ref().map(|_| "set"))
            .field("node", &self.node)
            .field("lease_ttl", &self.lease_ttl)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountRange {
    pub from: u64,
    pub to: u64,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub user: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub auth_user: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

impl fmt::Debug for AccountConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountConfig")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("auth_user", &self.auth_user)
            .field("display_name", &self.display_name)
            .finish()
    }
}

/// `[headers]`: SIP headers for integrations (sipline_sip::extra_headers).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadersConfig {
    /// Added to every INVITE of a call sipline places.
    pub invite: std::collections::BTreeMap<String, String>,
    /// Added to every REGISTER.
    pub register: std::collections::BTreeMap<String, String>,
    /// Headers a browser may put on its call (`call {number, headers}`).
    pub from_browser: Vec<String>,
    /// Headers of an incoming INVITE passed to the browser (`incomingCall.headers`).
    pub to_browser: Vec<String>,
}

/// Most names in each `[headers]` list.
const MAX_CONFIGURED_HEADERS: usize = 16;

impl HeadersConfig {
    /// What the user agent adds and passes on, and the browser's allow-list; checked.
    fn resolve(&self) -> Result<(sipline_sip::ExtraHeaders, Vec<String>), ConfigError> {
        use sipline_sip::extra_headers::{check_name, check_value};
        let fixed = |key: &str, map: &std::collections::BTreeMap<String, String>| {
            let too_many = map.len() > MAX_CONFIGURED_HEADERS;
            if too_many {
                return Err(ConfigError::new(key, "at most 16 headers"));
            }
            map.iter()
                .map(|(n, v)| {
                    check_name(n)
                        .and_then(|()| check_value(v))
                        .map_err(|e| ConfigError::new(key, format!("{n}: {e}")))?;
                    Ok((n.clone(), v.clone()))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let names = |key: &str, list: &[String], reserved_ok: bool| {
            if list.len() > MAX_CONFIGURED_HEADERS {
                return Err(ConfigError::new(key, "at most 16 headers"));
            }
            for n in list {
                // reading a header the core owns (Call-ID to correlate) is harmless
                let ok = match check_name(n) {
                    Err("sipline writes this header itself") => reserved_ok,
                    other => other.is_ok(),
                };
                if !ok {
                    return Err(ConfigError::new(
                        key,
                        format!("{n:?} is not a header name that may be used"),
                    ));
                }
            }
            Ok(list.to_vec())
        };
        let extra = sipline_sip::ExtraHeaders {
            invite: fixed("headers.invite", &self.invite)?,
            register: fixed("headers.register", &self.register)?,
            from_incoming: names("headers.to_browser", &self.to_browser, true)?,
        };
        Ok((extra, names("headers.from_browser", &self.from_browser, false)?))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallsConfig {
    /// Numbers a browser may dial (a regular expression matched against the whole number).
    pub dial_pattern: String,
    /// Status sent when a browser rejects an incoming call.
    pub reject_code: u16,
    /// Seconds a call may ring before it counts as not answered.
    pub no_answer_timeout: f64,
    /// Calls at once on this node (both ways); 0: as many as the pool has lines.
    pub max_concurrent: usize,
    /// Session timer interval asked for (RFC 4028), seconds; 0 turns session timers off.
    pub session_expires: u32,
    /// Shortest session timer interval accepted, seconds (a shorter one gets 422).
    pub session_min_se: u32,
    /// Calls one line may carry at once: 2 and more is call waiting (a second incoming
    /// call rings during a call), 1 answers 486 to it.
    pub per_line: usize,
}

/// Most calls one line may carry (`calls.per_line`).
pub const MAX_CALLS_PER_LINE: usize = 4;

impl CallsConfig {
    /// `calls.per_line`, checked.
    fn per_line(&self) -> Result<usize, ConfigError> {
        match self.per_line {
            1..=MAX_CALLS_PER_LINE => Ok(self.per_line),
            _ => Err(ConfigError::new(
                "calls.per_line",
                format!("must be between 1 and {MAX_CALLS_PER_LINE}"),
            )),
        }
    }

    /// `calls.session_expires` and `calls.session_min_se`, checked.
    fn session_timer(&self) -> Result<Option<SessionTimerConfig>, ConfigError> {
        if self.session_expires == 0 {
            return Ok(None);
        }
        if self.session_min_se == 0 {
            return Err(ConfigError::new(
                "calls.session_min_se",
                "must be at least 1 second",
            ));
        }
        if self.session_expires < self.session_min_se {
            return Err(ConfigError::new(
                "calls.session_expires",
                "must be at least calls.session_min_se (or 0: off)",
            ));
        }
        Ok(Some(SessionTimerConfig {
            expires: self.session_expires,
            min_se: self.session_min_se,
        }))
    }
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            dial_pattern: DEFAULT_DIAL_PATTERN.into(),
            reject_code: 486,
            no_answer_timeout: 120.0,
            max_concurrent: 0,
            session_expires: 1800,
            session_min_se: 90,
            per_line: 2,
        }
    }
}

/// Digits, `*`, `#` and `+`, at most 32 of them: enough for any phone number or
/// feature code, nothing that could be a SIP URI of somewhere else.
pub const DEFAULT_DIAL_PATTERN: &str = "^[0-9*#+]{1,32}$";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    pub rtp_ports: String,
    /// Send RTP where the far end's RTP comes from (NAT), not only where its SDP says.
    pub symmetric_rtp: bool,
    /// Voice codecs offered to the PBX, in order of preference.
    pub sip_codecs: Vec<String>,
    /// Voice codecs accepted from browsers, in order of preference.
    pub browser_codecs: Vec<String>,
    /// Seconds a call's far end may send no RTP (or its browser leg nothing at all)
    /// before the call is ended; 0 turns it off.
    pub timeout: f64,
    /// The same while the call is on hold (either way); 0 turns it off.
    pub hold_timeout: f64,
    /// SDES-SRTP on the SIP leg.
    pub srtp: SrtpMode,
}

/// SDES-SRTP on the SIP leg (`media.srtp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SrtpMode {
    /// Plain RTP only.
    #[default]
    Off,
    /// Best effort: offered with a key on RTP/AVP, used when the far end answers one.
    Optional,
    /// RTP/SAVP only.
    Mandatory,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            rtp_ports: "40000-40999".into(),
            symmetric_rtp: true,
            sip_codecs: DEFAULT_CODECS.iter().map(|c| (*c).to_owned()).collect(),
            browser_codecs: DEFAULT_CODECS.iter().map(|c| (*c).to_owned()).collect(),
            timeout: 30.0,
            hold_timeout: 600.0,
            srtp: SrtpMode::Off,
        }
    }
}

/// G.711 first on both legs: with the codecs PBXs use most, audio is relayed, not
/// transcoded; G.722 and Opus are there for wideband far ends and browsers.
pub const DEFAULT_CODECS: [&str; 4] = ["PCMU", "PCMA", "G722", "opus"];

fn parse_codecs(key: &str, names: &[String]) -> Result<Vec<MediaCodec>, ConfigError> {
    let mut out = Vec::new();
    for n in names {
        let c = match n.to_ascii_lowercase().as_str() {
            "pcmu" => MediaCodec::Pcmu,
            "pcma" => MediaCodec::Pcma,
            "g722" => MediaCodec::G722,
            "opus" => MediaCodec::Opus,
            _ => {
                return Err(ConfigError::new(
                    key,
                    format!("{n:?} is not one of PCMU, PCMA, G722, opus"),
                ));
            }
        };
        if out.contains(&c) {
            return Err(ConfigError::new(key, format!("{n} is listed twice")));
        }
        out.push(c);
    }
    if out.is_empty() {
        return Err(ConfigError::new(key, "needs at least one codec"));
    }
    Ok(out)
}

/// A configuration problem: which key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    fn new(key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.to_owned(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.key, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The configuration after checking: everything the gateway needs, resolved.
#[derive(Clone)]
pub struct Settings {
    /// Certificate and key files for HTTPS.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// The embedded PBX to run (when no registrar is configured).
    pub pbx: Option<EmbeddedPbx>,
    pub http_listen: SocketAddr,
    pub tokens: Vec<String>,
    pub ws_ping_interval: Duration,
    pub ws_idle_timeout: Duration,
    /// How long a session whose WebSocket dropped waits to be resumed (None: it ends).
    pub resume_window: Option<Duration>,
    pub http_limits: HttpLimits,
    pub session_limits: SessionLimits,
    pub sip_listen: SocketAddr,
    pub sip_tcp: crate::sip_transport::TcpLimits,
    /// TLS toward the PBX (`sip.transport = "tls"`).
    pub sip_tls: Option<crate::sip_tls::TlsClient>,
    pub ua: UaConfig,
    pub accounts: Vec<Account>,
    pub admission_wait: Duration,
    pub dial_pattern: regex::Regex,
    pub reject_code: u16,
    /// Calls at once on this node, if limited.
    pub max_calls: Option<usize>,
    pub drain_timeout: Duration,
    pub rtp_ports: RangeInclusive<u16>,
    /// Where RTP is received and what SDP advertises.
    pub media_ip: IpAddr,
    pub symmetric_rtp: bool,
    pub media_timeouts: sipline_media::watchdog::Timeouts,
    pub sip_codecs: Vec<MediaCodec>,
    pub browser_codecs: Vec<MediaCodec>,
    pub srtp: SrtpMode,
    /// The shared pool, when configured.
    pub cluster: Option<crate::cluster::ClusterSettings>,
    /// Headers a browser may put on its call (`headers.from_browser`).
    pub headers_from_browser: Vec<String>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("http_listen", &self.http_listen)
            .field("pbx", &self.pbx)
            .field("tokens", &format_args!("{} configured", self.tokens.len()))
            .field("sip_listen", &self.sip_listen)
            .field("ua", &self.ua)
            .field("accounts", &self.accounts)
            .field("dial_pattern", &self.dial_pattern.as_str())
            .field("reject_code", &self.reject_code)
            .field("rtp_ports", &self.rtp_ports)
            .finish_non_exhaustive()
    }
}

/// Bounds on HTTP connections ([`crate::http`]).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_timeout: Duration,
}

/// Bounds on what one browser session may do ([`crate::session`]).
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    pub max_session_length: Option<Duration>,
    pub requests_per_second: f64,
    pub request_burst: u32,
    pub max_candidates: usize,
}

/// The embedded PBX as configured: its users are the pool's accounts, these extra
/// users, and the built-in extensions.
#[derive(Clone)]
pub struct EmbeddedPbx {
    pub listen: SocketAddr,
    pub domain: String,
    pub users: Vec<(String, String)>,
    pub extensions: bool,
}

impl fmt::Debug for EmbeddedPbx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedPbx")
            .field("listen", &self.listen)
            .field("domain", &self.domain)
            .field(
                "users",
                &self.users.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>(),
            )
            .field("extensions", &self.extensions)
            .finish()
    }
}

fn domain_for_pbx(domain: &Option<String>, registrar: &Uri) -> String {
    domain.clone().unwrap_or_else(|| registrar.host.clone())
}

/// Environment variable holding extra HTTP tokens (comma-separated).
pub const ENV_TOKENS: &str = "SIPLINE_HTTP_TOKENS";

/// Environment variable overriding the password of explicit account `user`.
pub fn env_password_var(user: &str) -> String {
    let cleaned: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("SIPLINE_ACCOUNT_{cleaned}_PASSWORD")
}

impl HttpConfig {
    /// The limits on connections and on what each browser session may do.
    fn limits(&self) -> Result<(HttpLimits, SessionLimits), ConfigError> {
        let http_limits = HttpLimits {
            max_connections: at_least_one("http.max_connections", self.max_connections)?,
            max_connections_per_ip: at_least_one("http.max_connections_per_ip", self.max_connections_per_ip)?,
            header_timeout: secs("http.header_timeout", self.header_timeout, false)?,
        };
        let max_session_length = secs("http.max_session_length", self.max_session_length, true)?;
        if !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0) {
            return Err(ConfigError::new(
                "http.requests_per_second",
                "must be a positive number",
            ));
        }
        let session_limits = SessionLimits {
            max_sessions: at_least_one("http.max_sessions", self.max_sessions)?,
            max_sessions_per_ip: at_least_one("http.max_sessions_per_ip", self.max_sessions_per_ip)?,
            max_session_length: (!max_session_length.is_zero()).then_some(max_session_length),
            requests_per_second: self.requests_per_second,
            request_burst: at_least_one("http.request_burst", self.request_burst as usize)? as u32,
            max_candidates: self.max_candidates,
        };
        Ok((http_limits, session_limits))
    }
}

impl SipConfig {
    /// The TLS client toward the PBX when the transport is TLS (its CAs read now, so a
    /// bad file is a config error at start).
    fn tls(&self, ua: &UaConfig) -> Result<Option<crate::sip_tls::TlsClient>, ConfigError> {
        if ua.transport != Transport::Tls {
            if self.tls_ca.is_some() || self.tls_server_name.is_some() {
                return Err(ConfigError::new("sip.tls_ca", "only with transport = \"tls\""));
            }
            return Ok(None);
        }
        let first_hop = ua
            .outbound_proxy
            .as_ref()
            .map_or(&ua.registrar_uri, |(uri, _)| uri);
        let (key, name) = match &self.tls_server_name {
            Some(name) => ("sip.tls_server_name", name.as_str()),
            None => ("sip.registrar", first_hop.host.as_str()),
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        crate::sip_tls::TlsClient::new(self.tls_ca.as_deref(), name)
            .map(Some)
            .map_err(|e| match e {
                crate::sip_tls::TlsError::Ca(e) => ConfigError::new("sip.tls_ca", e),
                crate::sip_tls::TlsError::Name(e) => ConfigError::new(key, e),
            })
    }

    /// Who may call in, and the bounds on what SIP peers can hold.
    fn protection(&self) -> Result<(sipline_sip::Protection, crate::sip_transport::TcpLimits), ConfigError> {
        let mut trusted_sources = Vec::new();
        for (i, s) in self.trusted_sources.iter().enumerate() {
            trusted_sources.push(
                s.parse::<sipline_sip::trust::TrustedSource>()
                    .map_err(|e| ConfigError::new(&format!("sip.trusted_sources[{i}]"), e.to_string()))?,
            );
        }
        let protection = sipline_sip::Protection {
            trusted_sources,
            max_server_transactions: at_least_one(
                "sip.max_server_transactions",
                self.max_server_transactions,
            )?,
            stateless_rate: self.stateless_rate,
        };
        let sip_tcp = crate::sip_transport::TcpLimits {
            max_connections: at_least_one("sip.tcp_max_connections", self.tcp_max_connections)?,
            max_per_ip: at_least_one("sip.tcp_max_connections_per_ip", self.tcp_max_connections_per_ip)?,
            idle_timeout: secs("sip.tcp_idle_timeout", self.tcp_idle_timeout, false)?,
            message_timeout: secs("sip.tcp_message_timeout", self.tcp_message_timeout, false)?,
            send_queue_bytes: self
                .tcp_send_queue_bytes
                .max(sipline_sip::message::MAX_MESSAGE_SIZE),
        };
        Ok((protection, sip_tcp))
    }
}

impl Config {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            // toml's message names the key and shows the line; keep it on one line
            let msg = e.to_string().replace('\n', " ").replace("  ", " ");
            ConfigError::new("", format!("invalid config: {}", msg.trim()))
        })
    }

    /// Checks everything and resolves addresses. `env` looks up environment
    /// variables (a parameter so tests need not touch the process environment).
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let (ws_ping_interval, ws_idle_timeout) = self.http.ws_timing()?;
        let (http_limits, session_limits) = self.http.limits()?;
        let (mut ua, sip_tcp) = self.user_agent()?;
        let (extra_headers, headers_from_browser) = self.headers.resolve()?;
        ua.headers = extra_headers;
        let domain = self.pool.domain(&ua.registrar_uri)?;
        let (media_timeouts, media_ip) = (self.media.timeouts()?, self.media_ip(&ua.advertise_host)?);
        Ok(Settings {
            tls: self.http.tls()?,
            pbx: self.embedded_pbx(&ua.registrar_uri)?,
            http_listen: self.http.listen,
            tokens: self.http.tokens(&env)?,
            ws_ping_interval,
            ws_idle_timeout,
            resume_window: {
                let w = secs("http.resume_window", self.http.resume_window, true)?;
                if w > Duration::from_secs(3600) {
                    return Err(ConfigError::new("http.resume_window", "at most 3600 seconds"));
                }
                (!w.is_zero()).then_some(w)
            },
            http_limits,
            session_limits,
            sip_listen: self.sip.listen,
            sip_tls: self.sip.tls(&ua)?,
            sip_tcp,
            accounts: self.pool.accounts(&domain, &env)?,
            ua,
            admission_wait: secs("pool.admission_wait", self.pool.admission_wait, true)?,
            dial_pattern: self.calls.dial_pattern()?,
            reject_code: self.calls.reject_code()?,
            max_calls: (self.calls.max_concurrent > 0).then_some(self.calls.max_concurrent),
            drain_timeout: secs("http.drain_timeout", self.http.drain_timeout, true)?,
            rtp_ports: parse_port_range(&self.media.rtp_ports)
                .map_err(|p| ConfigError::new("media.rtp_ports", p))?,
            media_ip,
            symmetric_rtp: self.media.symmetric_rtp,
            media_timeouts,
            sip_codecs: parse_codecs("media.sip_codecs", &self.media.sip_codecs)?,
            browser_codecs: parse_codecs("media.browser_codecs", &self.media.browser_codecs)?,
            srtp: self.media.srtp,
            cluster: self.cluster()?,
            headers_from_browser,
        })
    }

    /// `[cluster]`: only with an external PBX (each node would otherwise run its own).
    fn cluster(&self) -> Result<Option<crate::cluster::ClusterSettings>, ConfigError> {
        let c = &self.cluster;
        let Some(url) = &c.redis else {
            return Ok(None);
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("redis+unix://"))
        {
            return Err(ConfigError::new("cluster.redis", "expected redis://HOST:PORT"));
        }
        if let Err(e) = redis::Client::open(url.as_str()) {
            return Err(ConfigError::new("cluster.redis", e.to_string()));
        }
        if self.sip.registrar.is_none() {
            return Err(ConfigError::new(
                "cluster.redis",
                "a cluster needs an external PBX: set sip.registrar",
            ));
        }
        let lease_ttl = secs("cluster.lease_ttl", c.lease_ttl, false)?;
        if lease_ttl < Duration::from_secs(1) || lease_ttl > Duration::from_secs(300) {
            return Err(ConfigError::new("cluster.lease_ttl", "between 1 and 300 seconds"));
        }
        let node = c
            .node
            .clone()
            .unwrap_or_else(|| format!("{}:{}", host_name(), self.http.listen.port()));
        if node.is_empty() || node.len() > 128 || node.contains(|ch: char| ch.is_whitespace() || ch == '*') {
            return Err(ConfigError::new(
                "cluster.node",
                "1 to 128 characters, no spaces or '*'",
            ));
        }
        if c.key_prefix.is_empty() || c.key_prefix.contains(|ch: char| ch.is_whitespace() || ch == '*') {
            return Err(ConfigError::new(
                "cluster.key_prefix",
                "non-empty, no spaces or '*'",
            ));
        }
        Ok(Some(crate::cluster::ClusterSettings {
            redis_url: url.clone(),
            node,
            lease_ttl,
            key_prefix: c.key_prefix.clone(),
            http_addr: self.http.listen.to_string(),
            sip_addr: self.sip.listen.to_string(),
        }))
    }

    /// `[sip]` (with the embedded PBX's constraints) and `[calls]`' timers: what the
    /// SIP user agent runs with, and the limits of SIP over TCP.
    fn user_agent(&self) -> Result<(UaConfig, crate::sip_transport::TcpLimits), ConfigError> {
        let transport = Transport::parse(&self.sip.transport).ok_or_else(|| {
            ConfigError::new(
                "sip.transport",
                format!("{:?} is not \"udp\", \"tcp\" or \"tls\"", self.sip.transport),
            )
        })?;
        // no registrar: the embedded PBX is the registrar
        if self.sip.registrar.is_none() {
            if !self.pbx.listen.ip().is_loopback() {
                return Err(ConfigError::new(
                    "pbx.listen",
                    "the embedded PBX listens on loopback only (configure sip.registrar for a real PBX)",
                ));
            }
            if transport != Transport::Udp {
                return Err(ConfigError::new(
                    "sip.transport",
                    "the embedded PBX speaks UDP only",
                ));
            }
        }
        let registrar_text = match &self.sip.registrar {
            Some(r) => r.clone(),
            None => format!("sip:{}", self.pbx.listen),
        };
        let (registrar_uri, registrar) = resolve_sip_uri("sip.registrar", &registrar_text, transport)?;
        let outbound_proxy = match &self.sip.outbound_proxy {
            Some(p) => Some(resolve_sip_uri("sip.outbound_proxy", p, transport)?),
            None => None,
        };
        if !(10..=86_400).contains(&self.sip.expires) {
            return Err(ConfigError::new(
                "sip.expires",
                "must be between 10 and 86400 seconds",
            ));
        }
        let keepalive_interval = secs("sip.keepalive_interval", self.sip.keepalive_interval, true)?;
        let retry_min = secs("sip.retry_min", self.sip.retry_min, false)?;
        let retry_max = secs("sip.retry_max", self.sip.retry_max, false)?;
        if retry_max < retry_min {
            return Err(ConfigError::new(
                "sip.retry_max",
                "must not be shorter than sip.retry_min",
            ));
        }
        if self.sip.user_agent.trim().is_empty() || self.sip.user_agent.contains(['\r', '\n']) {
            return Err(ConfigError::new("sip.user_agent", "must be one non-empty line"));
        }
        let (protection, sip_tcp) = self.sip.protection()?;
        let ua = UaConfig {
            transport,
            advertise_host: self.sip.advertise_host()?,
            advertise_port: self.sip.listen.port(),
            registrar_uri,
            registrar,
            outbound_proxy,
            expires: self.sip.expires,
            keepalive_interval: (!keepalive_interval.is_zero()).then_some(keepalive_interval),
            keepalive_timeout: secs("sip.keepalive_timeout", self.sip.keepalive_timeout, false)?,
            retry_min,
            retry_max,
            user_agent: self.sip.user_agent.clone(),
            no_answer_timeout: secs("calls.no_answer_timeout", self.calls.no_answer_timeout, false)?,
            session_timer: self.calls.session_timer()?,
            timers: Timers::default(),
            protection,
            headers: sipline_sip::ExtraHeaders::default(),
            calls_per_line: self.calls.per_line()?,
        };
        Ok((ua, sip_tcp))
    }

    /// The embedded PBX, when no registrar is configured.
    fn embedded_pbx(&self, registrar_uri: &Uri) -> Result<Option<EmbeddedPbx>, ConfigError> {
        if self.sip.registrar.is_some() {
            return Ok(None);
        }
        let mut users = Vec::new();
        for (i, a) in self.pbx.users.iter().enumerate() {
            let password = a
                .password
                .clone()
                .ok_or_else(|| ConfigError::new(&format!("pbx.users[{i}].password"), "missing"))?;
            users.push((a.user.trim().to_owned(), password));
        }
        Ok(Some(EmbeddedPbx {
            listen: self.pbx.listen,
            domain: domain_for_pbx(&self.pool.domain, registrar_uri),
            users,
            extensions: self.pbx.extensions,
        }))
    }

    /// The address written into SDP: the advertised host if it is an address, else
    /// the SIP listening address.
    fn media_ip(&self, advertise_host: &str) -> Result<IpAddr, ConfigError> {
        match advertise_host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => Ok(ip),
            Err(_) if !self.sip.listen.ip().is_unspecified() => Ok(self.sip.listen.ip()),
            Err(_) => Err(ConfigError::new(
                "sip.advertise",
                "must be an IP address when sip.listen is a wildcard (it goes into SDP)",
            )),
        }
    }
}

impl HttpConfig {
    /// The API tokens, from the file and `SIPLINE_HTTP_TOKENS`.
    fn tokens(&self, env: &impl Fn(&str) -> Option<String>) -> Result<Vec<String>, ConfigError> {
        let mut tokens: Vec<String> = self.tokens.clone();
        if let Some(extra) = env(ENV_TOKENS) {
            tokens.extend(
                extra
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            );
        }
        if tokens.iter().any(|t| t.len() < 16) {
            return Err(ConfigError::new(
                "http.tokens",
                "every token must be at least 16 characters",
            ));
        }
        Ok(tokens)
    }

    /// WebSocket ping interval and idle timeout.
    fn ws_timing(&self) -> Result<(Duration, Duration), ConfigError> {
        let ping = secs("http.ws_ping_interval", self.ws_ping_interval, false)?;
        let idle = secs("http.ws_idle_timeout", self.ws_idle_timeout, false)?;
        if idle <= ping {
            return Err(ConfigError::new(
                "http.ws_idle_timeout",
                "must be longer than http.ws_ping_interval",
            ));
        }
        Ok((ping, idle))
    }

    /// HTTPS certificate and key, both or neither, readable.
    fn tls(&self) -> Result<Option<(std::path::PathBuf, std::path::PathBuf)>, ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => {
                for (key, path) in [("http.tls_cert", c), ("http.tls_key", k)] {
                    if std::fs::metadata(path).is_err() {
                        return Err(ConfigError::new(key, format!("cannot read {}", path.display())));
                    }
                }
                Ok(Some((c.clone(), k.clone())))
            }
            (None, None) => Ok(None),
            (Some(_), None) => Err(ConfigError::new("http.tls_key", "missing (tls_cert is set)")),
            (None, Some(_)) => Err(ConfigError::new("http.tls_cert", "missing (tls_key is set)")),
        }
    }
}

impl SipConfig {
    /// The host written into Via and Contact.
    fn advertise_host(&self) -> Result<String, ConfigError> {
        match &self.advertise {
            Some(a) => {
                let a = a.trim();
                if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == ':' && !a.starts_with('['))
                {
                    return Err(ConfigError::new(
                        "sip.advertise",
                        format!("{a:?} is not a host name or address"),
                    ));
                }
                Ok(a.to_owned())
            }
            None if self.listen.ip().is_unspecified() => Err(ConfigError::new(
                "sip.advertise",
                "required when sip.listen is a wildcard address (which address should peers use?)",
            )),
            None => Ok(host_text(self.listen.ip())),
        }
    }
}

impl PoolConfig {
    /// The accounts' SIP domain: configured, or the registrar's host.
    fn domain(&self, registrar_uri: &Uri) -> Result<String, ConfigError> {
        let Some(d) = &self.domain else {
            return Ok(registrar_uri.host.clone());
        };
        let d = d.trim();
        if d.is_empty() || d.contains(|c: char| c.is_whitespace() || "<>@;\"".contains(c)) {
            return Err(ConfigError::new(
                "pool.domain",
                format!("{d:?} is not a SIP domain"),
            ));
        }
        Ok(d.to_owned())
    }

    /// Every account of the pool: the range, then the listed ones (passwords from the
    /// environment first), each user once.
    fn accounts(
        &self,
        domain: &str,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<Account>, ConfigError> {
        let mut accounts = Vec::new();
        if let Some(r) = &self.range {
            if r.from > r.to {
                return Err(ConfigError::new("pool.range", "from must not be greater than to"));
            }
            if r.to - r.from >= 10_000 {
                return Err(ConfigError::new("pool.range", "more than 10000 accounts"));
            }
            for n in r.from..=r.to {
                let user = n.to_string();
                accounts.push(Account {
                    auth_user: user.clone(),
                    password: user.clone(),
                    user,
                    display_name: None,
                    domain: domain.to_owned(),
                });
            }
        }
        for (i, a) in self.accounts.iter().enumerate() {
            accounts.push(a.resolve(i, domain, env)?);
        }
        if accounts.is_empty() {
            return Err(ConfigError::new(
                "pool",
                "no accounts: set pool.range and/or pool.accounts",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for a in &accounts {
            if !seen.insert(a.user.clone()) {
                return Err(ConfigError::new(
                    "pool",
                    format!("account {} is listed twice", a.user),
                ));
            }
        }
        Ok(accounts)
    }
}

impl AccountConfig {
    /// `pool.accounts[i]`, checked.
    fn resolve(
        &self,
        i: usize,
        domain: &str,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Account, ConfigError> {
        let key = |k: &str| format!("pool.accounts[{i}].{k}");
        let user = self.user.trim();
        if user.is_empty()
            || !user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/".contains(c))
        {
            return Err(ConfigError::new(
                &key("user"),
                format!("{user:?} is not a valid SIP user name"),
            ));
        }
        let password = env(&env_password_var(user))
            .or_else(|| self.password.clone())
            .ok_or_else(|| {
                ConfigError::new(
                    &key("password"),
                    format!("missing (set it here or in {})", env_password_var(user)),
                )
            })?;
        if let Some(d) = &self.display_name
            && d.contains(['\r', '\n'])
        {
            return Err(ConfigError::new(&key("display_name"), "must be one line"));
        }
        Ok(Account {
            user: user.to_owned(),
            auth_user: self.auth_user.clone().unwrap_or_else(|| user.to_owned()),
            password,
            display_name: self.display_name.clone().filter(|d| !d.is_empty()),
            domain: domain.to_owned(),
        })
    }
}

impl CallsConfig {
    /// The dial pattern, always anchored as a whole: "^1000|9.*$" must mean 1000 or
    /// 9…, never "9 anywhere".
    fn dial_pattern(&self) -> Result<regex::Regex, ConfigError> {
        let anchored = format!("^(?:{})$", self.dial_pattern);
        regex::Regex::new(&anchored)
            .map_err(|e| ConfigError::new("calls.dial_pattern", format!("not a regular expression: {e}")))
    }

    fn reject_code(&self) -> Result<u16, ConfigError> {
        if !(400..=699).contains(&self.reject_code) {
            return Err(ConfigError::new(
                "calls.reject_code",
                "must be a SIP status between 400 and 699",
            ));
        }
        Ok(self.reject_code)
    }
}

impl MediaConfig {
    /// How long a call's media may be silent, active and on hold (0: never ends it).
    fn timeouts(&self) -> Result<sipline_media::watchdog::Timeouts, ConfigError> {
        Ok(sipline_media::watchdog::Timeouts {
            active: Some(secs("media.timeout", self.timeout, true)?).filter(|d| !d.is_zero()),
            held: Some(secs("media.hold_timeout", self.hold_timeout, true)?).filter(|d| !d.is_zero()),
        })
    }
}

/// A duration in seconds from the file: finite, not negative, at most a day, and not
/// zero unless `allow_zero` (which then means "off").
/// This machine's name (for the default node name).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sipline".into())
}

fn secs(key: &str, v: f64, allow_zero: bool) -> Result<Duration, ConfigError> {
    if !v.is_finite() || v < 0.0 || (!allow_zero && v == 0.0) || v > 86_400.0 {
        return Err(ConfigError::new(
            key,
            format!("{v} is not a sensible number of seconds"),
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// A count that must be at least one (a limit of zero would refuse everything).
fn at_least_one(key: &str, n: usize) -> Result<usize, ConfigError> {
    if n == 0 {
        return Err(ConfigError::new(key, "must be at least 1"));
    }
    Ok(n)
}

fn host_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Parses a `sip:` URI from the config and resolves where to send to reach it.
fn resolve_sip_uri(key: &str, text: &str, transport: Transport) -> Result<(Uri, Target), ConfigError> {
    let uri =
        Uri::parse(text).map_err(|e| ConfigError::new(key, format!("{text:?} is not a SIP URI ({e})")))?;
    if uri.scheme != "sip" {
        return Err(ConfigError::new(
            key,
            format!("only sip: URIs are supported, not {}:", uri.scheme),
        ));
    }
    let port = uri.port.unwrap_or(transport.default_port());
    let host = uri.host.trim_start_matches('[').trim_end_matches(']');
    let addr = (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| ConfigError::new(key, format!("cannot resolve {}", uri.host)))?;
    Ok((uri, Target { transport, addr }))
}

/// `"40000-40999"` → 40000..=40999 (an even start, at least two ports).
fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not a range like \"40000-40999\""))?;
    let a: u16 = a.trim().parse().map_err(|_| format!("{a:?} is not a port"))?;
    let b: u16 = b.trim().parse().map_err(|_| format!("{b:?} is not a port"))?;
    if a < 1024 || b < a + 1 {
        return Err(format!("{s:?} must be at least two ports above 1023"));
    }
    Ok(a..=b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_work_without_a_file() {
        let s = Config::default().resolve(no_env).unwrap();
        assert_eq!(s.accounts.len(), 19);
        assert_eq!(s.accounts[0].user, "880");
        assert_eq!(s.accounts[0].password, "880");
        assert_eq!(s.accounts[0].domain, "127.0.0.1");
        assert_eq!(s.ua.registrar.addr, "127.0.0.1:5060".parse().unwrap());
        assert!(s.pbx.is_some(), "no registrar: the embedded PBX");
        assert_eq!(s.ua.advertise_host, "127.0.0.1");
        assert_eq!(s.ua.advertise_port, 5090);
        assert_eq!(s.http_listen, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn example_file_loads() {
        let text = include_str!("../../../sipline.example.toml");
        let cfg = Config::parse(text).unwrap();
        let env = |k: &str| (k == "SIPLINE_ACCOUNT_1000_PASSWORD").then(|| "from-env".to_owned());
        let s = cfg.resolve(env).unwrap();
        let a = s.accounts.iter().find(|a| a.user == "1000").unwrap();
        assert_eq!(a.password, "from-env", "environment overrides the file");
        assert_eq!(a.display_name.as_deref(), Some("Reception"));
    }

    #[test]
    fn explicit_pool_replaces_the_default_range() {
        let cfg = Config::parse("[pool]\naccounts = [{ user = \"1000\", password = \"secret\" }]\n").unwrap();
        let s = cfg.resolve(no_env).unwrap();
        assert_eq!(s.accounts.len(), 1);
        assert_eq!(s.accounts[0].auth_user, "1000");
    }

    fn err(text: &str) -> String {
        match Config::parse(text) {
            Err(e) => e.to_string(),
            Ok(c) => c.resolve(no_env).unwrap_err().to_string(),
        }
    }

    #[test]
    fn tls_toward_the_pbx_is_checked_at_start() {
        // the TLS port by default, the CA file read now
        let e =
            err("[sip]\nregistrar = \"sip:127.0.0.1\"\ntransport = \"tls\"\ntls_ca = \"/nonexistent.pem\"\n");
        assert!(e.contains("sip.tls_ca") && e.contains("/nonexistent.pem"), "{e}");
        let e =
            err("[sip]\nregistrar = \"sip:127.0.0.1\"\ntls_ca = \"/etc/ssl/certs/ca-certificates.crt\"\n");
        assert!(e.contains("only with transport"), "{e}");
        let e = err("[sip]\ntransport = \"tls\"\n");
        assert!(e.contains("embedded PBX"), "{e}");
        let dir = std::env::temp_dir().join(format!("sipline-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = err(&format!(
            "[sip]\nregistrar = \"sip:127.0.0.1\"\ntransport = \"tls\"\ntls_ca = \"{}\"\n",
            empty.display()
        ));
        assert!(e.contains("no certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn headers_resolve_and_the_core_owns_its_own() {
        let cfg = Config::parse(
            "[headers]\ninvite = { \"X-Origin\" = \"sipline\" }\nregister = { \"X-Tenant\" = \"acme\" }\n\
             from_browser = [\"X-Customer-Id\"]\nto_browser = [\"X-Customer-Id\", \"Call-ID\"]\n",
        )
        .unwrap();
        let s = cfg.resolve(no_env).unwrap();
        assert_eq!(s.ua.headers.invite, vec![("X-Origin".into(), "sipline".into())]);
        assert_eq!(s.ua.headers.register, vec![("X-Tenant".into(), "acme".into())]);
        assert_eq!(
            s.ua.headers.from_incoming,
            vec!["X-Customer-Id", "Call-ID"],
            "reading is harmless"
        );
        assert_eq!(s.headers_from_browser, vec!["X-Customer-Id"]);
        for (bad, key) in [
            ("invite = { \"Via\" = \"x\" }", "headers.invite"),
            ("register = { \"X-A\" = \"a\\r\\nVia: x\" }", "headers.register"),
            ("from_browser = [\"Contact\"]", "headers.from_browser"),
            ("to_browser = [\"X Y\"]", "headers.to_browser"),
        ] {
            let e = err(&format!("[headers]\n{bad}\n"));
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn a_cluster_names_its_node_after_the_host_and_port() {
        let cfg = Config::parse(
            "[http]\nlisten = \"127.0.0.1:8181\"\n[sip]\nregistrar = \"sip:127.0.0.1\"\n\
             [cluster]\nredis = \"redis://:secret@127.0.0.1:6379\"\n",
        )
        .unwrap();
        let c = cfg.resolve(no_env).unwrap().cluster.expect("clustered");
        assert!(c.node.ends_with(":8181"), "{}", c.node);
        assert_eq!(c.lease_ttl, Duration::from_secs(15));
        assert_eq!(c.key_prefix, "sipline");
        assert!(
            !format!("{cfg:?}").contains("secret"),
            "the Redis password stays out of logs"
        );
        assert!(Config::default().resolve(no_env).unwrap().cluster.is_none());
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases = [
            ("[sip]\ntransport = \"sctp\"", "sip.transport"),
            ("[sip]\nregistrar = \"http://x\"", "sip.registrar"),
            ("[pbx]\nlisten = \"0.0.0.0:5060\"", "pbx.listen"),
            ("[sip]\ntransport = \"tcp\"", "sip.transport"),
            ("[sip]\nregistrar = \"sip:no.such.host.invalid\"", "sip.registrar"),
            ("[sip]\nexpires = 1", "sip.expires"),
            ("[sip]\nlisten = \"0.0.0.0:5090\"", "sip.advertise"),
            ("[sip]\nretry_min = 10\nretry_max = 5", "sip.retry_max"),
            ("[sip]\nkeepalive_interval = -1", "sip.keepalive_interval"),
            ("[cluster]\nredis = \"localhost:6379\"", "cluster.redis"),
            ("[cluster]\nredis = \"redis://127.0.0.1:6379\"", "sip.registrar"),
            (
                "[sip]\nregistrar = \"sip:127.0.0.1\"\n[cluster]\nredis = \"redis://127.0.0.1\"\nlease_ttl = 0.5",
                "cluster.lease_ttl",
            ),
            (
                "[sip]\nregistrar = \"sip:127.0.0.1\"\n[cluster]\nredis = \"redis://127.0.0.1\"\nnode = \"a b\"",
                "cluster.node",
            ),
            ("[pool]\nrange = { from = 10, to = 1 }", "pool.range"),
            (
                "[pool]\naccounts = [{ user = \"1000\" }]",
                "pool.accounts[0].password",
            ),
            (
                "[pool]\naccounts = [{ user = \"a b\", password = \"x\" }]",
                "pool.accounts[0].user",
            ),
            ("[pool]\ndomain = \"x\"", "pool: no accounts"),
            (
                "[pool]\nrange = { from = 1, to = 2 }\naccounts = [{ user = \"1\", password = \"x\" }]",
                "listed twice",
            ),
            ("[media]\nrtp_ports = \"40000\"", "media.rtp_ports"),
            ("[media]\nrtp_ports = \"5-4\"", "media.rtp_ports"),
            ("[media]\nsip_codecs = [\"GSM\"]", "media.sip_codecs"),
            ("[media]\nbrowser_codecs = []", "media.browser_codecs"),
            ("[http]\ntokens = [\"short\"]", "http.tokens"),
            (
                "[http]\nws_ping_interval = 30\nws_idle_timeout = 10",
                "http.ws_idle_timeout",
            ),
            ("[http]\nlisten = \"nonsense\"", "listen"),
            ("[sip]\nlisen = \"127.0.0.1:5090\"", "lisen"),
            ("[nope]\n", "nope"),
            ("[calls]\ndial_pattern = \"([\"", "calls.dial_pattern"),
            ("[calls]\nreject_code = 200", "calls.reject_code"),
            (
                "[sip]\ntrusted_sources = [\"10.0.0.0/8\", \"pbx.example\"]",
                "sip.trusted_sources[1]",
            ),
            (
                "[sip]\nmax_server_transactions = 0",
                "sip.max_server_transactions",
            ),
            (
                "[sip]\ntcp_max_connections_per_ip = 0",
                "sip.tcp_max_connections_per_ip",
            ),
            ("[sip]\ntcp_idle_timeout = 0", "sip.tcp_idle_timeout"),
            ("[http]\nmax_connections = 0", "http.max_connections"),
            ("[http]\nheader_timeout = -1", "http.header_timeout"),
            ("[http]\nmax_sessions_per_ip = 0", "http.max_sessions_per_ip"),
            ("[http]\nrequests_per_second = 0", "http.requests_per_second"),
        ];
        for (text, needle) in cases {
            let e = err(text);
            assert!(e.contains(needle), "{text:?}: {e:?} should mention {needle:?}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let cfg =
            Config::parse("[pool]\naccounts = [{ user = \"1000\", password = \"hunter2\" }]\n").unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2"));
        assert!(!format!("{:?}", cfg.resolve(no_env).unwrap()).contains("hunter2"));
    }

    #[test]
    fn dial_policy_defaults_to_short_numbers() {
        let s = Config::default().resolve(no_env).unwrap();
        for ok in ["1000", "*97", "+4930123456", "#31#"] {
            assert!(s.dial_pattern.is_match(ok), "{ok}");
        }
        for bad in [
            "",
            "1000@evil.example",
            "sip:1000@x",
            "12 34",
            &"1".repeat(33),
            "1000;user=phone",
        ] {
            assert!(!s.dial_pattern.is_match(bad), "{bad}");
        }
        // unanchored patterns are anchored
        let cfg = Config::parse("[calls]\ndial_pattern = \"9[0-9]+\"\n").unwrap();
        let s = cfg.resolve(no_env).unwrap();
        assert!(s.dial_pattern.is_match("9123"));
        assert!(!s.dial_pattern.is_match("89123"));
    }

    #[test]
    fn an_alternation_with_its_own_anchors_is_anchored_as_a_whole() {
        let cfg = Config::parse("[calls]\ndial_pattern = \"^1000|9.*$\"\n").unwrap();
        let s = cfg.resolve(no_env).unwrap();
        for ok in ["1000", "9", "9123"] {
            assert!(s.dial_pattern.is_match(ok), "{ok}");
        }
        for bad in ["x9", "55519", "1000abc", "abc9def", "0900-premium", "10009"] {
            assert!(!s.dial_pattern.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn env_var_names() {
        assert_eq!(env_password_var("1000"), "SIPLINE_ACCOUNT_1000_PASSWORD");
        assert_eq!(env_password_var("a.b-c"), "SIPLINE_ACCOUNT_A_B_C_PASSWORD");
    }
}
