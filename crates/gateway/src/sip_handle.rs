//! How sessions talk to the SIP task: a cloneable [`SipHandle`] whose methods send
//! [`Command`]s (answered on oneshot channels), and what the task tells a session
//! about its line and calls ([`LineEvent`], [`CallNotice`]). The task itself is
//! `sip_driver`.

use sipline_call::CallControlError;
use sipline_sip::{Account, CallRef, CallState, CallStatus, LineId, LineStatus, UaStats};
use tokio::sync::{mpsc, oneshot};

use crate::api::DtmfMethod;
use crate::media_session::MediaHandle;

/// What a session hears about its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent {
    Status(LineStatus),
    Call(CallNotice),
    /// The line is unregistered and gone: its account may be released.
    Removed,
}

/// What a session hears about its line's calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallNotice {
    Incoming {
        call: CallRef,
        from: String,
        display_name: Option<String>,
        headers: Vec<(String, String)>,
    },
    State {
        call: CallRef,
        status: CallStatus,
    },
    Error {
        call: Option<CallRef>,
        code: Option<u16>,
        reason: String,
    },
    /// A key press from the far end (SIP INFO; RFC 4733 ones come from the media session).
    Dtmf {
        call: CallRef,
        digit: char,
        method: DtmfMethod,
    },
    /// How the browser's transfer of the call is going.
    Transfer {
        call: CallRef,
        state: sipline_sip::TransferState,
        code: Option<u16>,
    },
}

/// A call as the session may ask about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    pub call: CallRef,
    pub peer: String,
    pub incoming: bool,
    pub state: CallState,
}

/// Counts for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DriverStats {
    pub ua: UaStats,
    pub rtp_ports_in_use: usize,
}

pub(crate) enum Command {
    AddLine {
        account: Account,
        /// Remove every binding of the account at the PBX before registering.
        replace_others: bool,
        events: mpsc::UnboundedSender<LineEvent>,
        media: Option<MediaHandle>,
        reply: oneshot::Sender<LineId>,
    },
    RemoveLine(LineId),
    PlaceCall {
        line: LineId,
        number: String,
        /// Extra headers for the INVITE (checked).
        headers: Vec<(String, String)>,
        reply: oneshot::Sender<Result<CallRef, CallControlError>>,
    },
    Accept {
        line: LineId,
        reply: oneshot::Sender<Result<(), CallControlError>>,
    },
    HangUp {
        line: LineId,
        code: u16,
        /// What the browser is told, when not the usual.
        why: Option<String>,
        reply: oneshot::Sender<Result<(), CallControlError>>,
    },
    CallInfo {
        line: LineId,
        reply: oneshot::Sender<Option<CallInfo>>,
    },
    Dtmf {
        line: LineId,
        digits: String,
        reply: oneshot::Sender<Result<(), CallControlError>>,
    },
    /// A key press the browser sent itself, for a far end that needs it as INFO.
    InfoDtmf {
        line: LineId,
        digit: char,
    },
    Hold {
        line: LineId,
        on: bool,
        reply: oneshot::Sender<Result<(), CallControlError>>,
    },
    /// Blind transfer of the line's call to `number` (checked by the dial policy).
    Transfer {
        line: LineId,
        number: String,
        reply: oneshot::Sender<Result<(), CallControlError>>,
    },
    Stats(oneshot::Sender<DriverStats>),
    Shutdown(oneshot::Sender<()>),
}

/// A handle on the SIP task.
#[derive(Clone)]
pub struct SipHandle {
    pub(crate) commands: mpsc::UnboundedSender<Command>,
}

/// The SIP task is gone (only during shutdown).
#[derive(Debug)]
pub struct SipGone;

impl std::fmt::Display for SipGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the gateway is shutting down")
    }
}

impl SipHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, SipGone> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).map_err(|_| SipGone)?;
        rx.await.map_err(|_| SipGone)
    }

    /// Starts registering `account`; its events arrive on the returned receiver. Calls
    /// on the line bridge their media through `media` when there is one.
    pub async fn add_line(
        &self,
        account: Account,
        media: Option<MediaHandle>,
    ) -> Result<(LineId, mpsc::UnboundedReceiver<LineEvent>), SipGone> {
        self.add_line_with(account, media, false).await
    }

    /// [`SipHandle::add_line`]; with `replace_others`, every binding the PBX holds for the
    /// account is removed first (a node that died holding it).
    pub async fn add_line_with(
        &self,
        account: Account,
        media: Option<MediaHandle>,
        replace_others: bool,
    ) -> Result<(LineId, mpsc::UnboundedReceiver<LineEvent>), SipGone> {
        let (events, rx) = mpsc::unbounded_channel();
        let id = self
            .ask(|reply| Command::AddLine {
                account,
                replace_others,
                events,
                media,
                reply,
            })
            .await?;
        Ok((id, rx))
    }

    pub async fn dtmf(&self, line: LineId, digits: String) -> Result<Result<(), CallControlError>, SipGone> {
        self.ask(|reply| Command::Dtmf { line, digits, reply }).await
    }

    /// Blind transfer: the far end is asked (REFER) to call `number`; answered once the
    /// REFER is on its way, the progress comes as [`CallNotice::Transfer`].
    pub async fn transfer(
        &self,
        line: LineId,
        number: String,
    ) -> Result<Result<(), CallControlError>, SipGone> {
        self.ask(|reply| Command::Transfer { line, number, reply }).await
    }

    pub fn info_dtmf(&self, line: LineId, digit: char) {
        let _ = self.commands.send(Command::InfoDtmf { line, digit });
    }

    /// Puts the far end on hold (`on`) or takes it off. The command leaves at once; the
    /// returned future resolves when the far end has answered (or refused).
    pub fn hold(
        &self,
        line: LineId,
        on: bool,
    ) -> impl Future<Output = Result<Result<(), CallControlError>, SipGone>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = self.commands.send(Command::Hold { line, on, reply }).is_ok();
        async move {
            if !sent {
                return Err(SipGone);
            }
            rx.await.map_err(|_| SipGone)
        }
    }

    /// Unregisters a line (ending its call first); [`LineEvent::Removed`] follows.
    pub fn remove_line(&self, line: LineId) {
        let _ = self.commands.send(Command::RemoveLine(line));
    }

    pub async fn place_call(
        &self,
        line: LineId,
        number: String,
        headers: Vec<(String, String)>,
    ) -> Result<Result<CallRef, CallControlError>, SipGone> {
        self.ask(|reply| Command::PlaceCall {
            line,
            number,
            headers,
            reply,
        })
        .await
    }

    pub async fn accept(&self, line: LineId) -> Result<Result<(), CallControlError>, SipGone> {
        self.ask(|reply| Command::Accept { line, reply }).await
    }

    pub async fn hang_up(&self, line: LineId, code: u16) -> Result<Result<(), CallControlError>, SipGone> {
        self.ask(|reply| Command::HangUp {
            line,
            code,
            why: None,
            reply,
        })
        .await
    }

    /// Ends the line's call for a reason of the gateway's own (a media timeout), which
    /// the browser is told in the call's final state.
    pub fn end_call(&self, line: LineId, why: String) {
        let (reply, _) = oneshot::channel();
        let _ = self.commands.send(Command::HangUp {
            line,
            code: 480,
            why: Some(why),
            reply,
        });
    }

    pub async fn call_info(&self, line: LineId) -> Result<Option<CallInfo>, SipGone> {
        self.ask(|reply| Command::CallInfo { line, reply }).await
    }

    pub async fn stats(&self) -> Result<DriverStats, SipGone> {
        self.ask(Command::Stats).await
    }

    /// Unregisters every line (bounded in time) and stops the task.
    pub async fn shutdown(&self) {
        let _ = self.ask(Command::Shutdown).await;
    }
}
