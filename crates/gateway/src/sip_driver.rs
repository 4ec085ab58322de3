//! The tokio driver of the SIP core (the original example's `SoftPhone`): one task
//! owns the [`UserAgent`] and the SIP sockets, feeds it datagrams and timeouts, sends
//! what it asks, and routes its events to the session that owns each line.
//!
//! Sessions talk to it through a cloneable [`SipHandle`]; nothing else touches SIP
//! state, so there are no locks around it.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use siphon_sip::{Account, Event, LineId, LineStatus, UaConfig, UaStats, UserAgent};
use tokio::sync::{mpsc, oneshot};

use crate::sip_transport::{Received, SipTransport};

/// What a session hears about its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent {
    Status(LineStatus),
    /// The line is unregistered and gone: its account may be released.
    Removed,
}

enum Command {
    AddLine {
        account: Account,
        events: mpsc::UnboundedSender<LineEvent>,
        reply: oneshot::Sender<LineId>,
    },
    RemoveLine(LineId),
    Stats(oneshot::Sender<UaStats>),
    Shutdown(oneshot::Sender<()>),
}

/// A handle on the SIP task.
#[derive(Clone)]
pub struct SipHandle {
    commands: mpsc::UnboundedSender<Command>,
}

/// The SIP task is gone (only during shutdown).
#[derive(Debug)]
pub struct SipGone;

impl SipHandle {
    /// Starts registering `account`; its events arrive on the returned receiver.
    pub async fn add_line(
        &self,
        account: Account,
    ) -> Result<(LineId, mpsc::UnboundedReceiver<LineEvent>), SipGone> {
        let (events, rx) = mpsc::unbounded_channel();
        let (reply, id) = oneshot::channel();
        self.commands
            .send(Command::AddLine {
                account,
                events,
                reply,
            })
            .map_err(|_| SipGone)?;
        Ok((id.await.map_err(|_| SipGone)?, rx))
    }

    /// Unregisters a line; [`LineEvent::Removed`] follows.
    pub fn remove_line(&self, line: LineId) {
        let _ = self.commands.send(Command::RemoveLine(line));
    }

    pub async fn stats(&self) -> Result<UaStats, SipGone> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Stats(tx))
            .map_err(|_| SipGone)?;
        rx.await.map_err(|_| SipGone)
    }

    /// Unregisters every line (bounded in time) and stops the task.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Binds the SIP sockets and starts the SIP task.
pub async fn start(config: UaConfig, listen: std::net::SocketAddr) -> io::Result<SipHandle> {
    let transport = SipTransport::bind(listen).await?;
    let ua = UserAgent::new(Instant::now(), config, fastrand::u64(..));
    let (commands, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(ua, transport, rx));
    Ok(SipHandle { commands })
}

/// How long shutdown waits for unregistrations.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

async fn run(
    mut ua: UserAgent,
    mut transport: SipTransport,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut lines: HashMap<LineId, (String, mpsc::UnboundedSender<LineEvent>)> = HashMap::new();
    let mut shutdown: Option<(oneshot::Sender<()>, tokio::time::Instant)> = None;
    loop {
        while let Some(t) = ua.poll_transmit() {
            transport.send(t);
        }
        while let Some(ev) = ua.poll_event() {
            dispatch(ev, &mut lines);
        }
        if let Some((_, deadline)) = &shutdown
            && (lines.is_empty() || tokio::time::Instant::now() >= *deadline)
        {
            if !lines.is_empty() {
                tracing::warn!(
                    lines = lines.len(),
                    "shutting down before every line unregistered"
                );
            }
            if let Some((reply, _)) = shutdown.take() {
                let _ = reply.send(());
            }
            return;
        }
        let mut wake = ua
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        if let Some((_, deadline)) = &shutdown {
            wake = wake.min(*deadline);
        }
        tokio::select! {
            received = transport.recv() => match received {
                Received::Message(source, data) => {
                    if let Err(dropped) = ua.handle_receive(Instant::now(), source, &data) {
                        tracing::warn!("{dropped}");
                    }
                }
                Received::TransportError(target) => ua.handle_transport_error(Instant::now(), target),
            },
            cmd = commands.recv() => match cmd {
                Some(Command::AddLine { account, events, reply }) => {
                    let user = account.user.clone();
                    let id = ua.add_line(Instant::now(), account);
                    lines.insert(id, (user, events));
                    let _ = reply.send(id);
                }
                Some(Command::RemoveLine(id)) => ua.remove_line(Instant::now(), id),
                Some(Command::Stats(reply)) => {
                    let _ = reply.send(ua.stats());
                }
                Some(Command::Shutdown(reply)) => {
                    tracing::info!(lines = lines.len(), "unregistering every line before exit");
                    let ids: Vec<LineId> = lines.keys().copied().collect();
                    for id in ids {
                        ua.remove_line(Instant::now(), id);
                    }
                    shutdown = Some((reply, tokio::time::Instant::now() + SHUTDOWN_GRACE));
                }
                None => return,
            },
            _ = tokio::time::sleep_until(wake) => ua.handle_timeout(Instant::now()),
        }
    }
}

fn dispatch(ev: Event, lines: &mut HashMap<LineId, (String, mpsc::UnboundedSender<LineEvent>)>) {
    match ev {
        Event::Line { line, status } => {
            if let Some((user, tx)) = lines.get(&line) {
                tracing::info!(
                    user = %user,
                    state = ?status.state,
                    code = status.code,
                    reason = status.reason.as_deref().unwrap_or(""),
                    "line state changed"
                );
                let _ = tx.send(LineEvent::Status(status));
            }
        }
        Event::LineRemoved { line } => {
            if let Some((_, tx)) = lines.remove(&line) {
                let _ = tx.send(LineEvent::Removed);
            }
        }
        Event::Registrar { reachable: false } => {
            tracing::warn!("PBX unreachable (no answer to OPTIONS keepalive)")
        }
        Event::Registrar { reachable: true } => {
            tracing::info!("PBX reachable again: re-registering every line")
        }
    }
}
