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
        /// The call of the line it takes the place of (an attended transfer to us):
        /// answered at once, the other ended.
        replaces: Option<CallRef>,
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
    /// The far end of `call` transferred us (REFER): `new_call` to `number` is placed.
    Referred {
        call: CallRef,
        new_call: CallRef,
        number: String,
    },
    /// We put the call on hold or took it off, and the far end agreed.
    Hold {
        call: CallRef,
        on: bool,
    },
    /// How the browser's transfer of the call is going.
    Transfer {
        call: CallRef,
        state: sipline_sip::TransferState,
        code: Option<u16>,
    },
}

/// Which call a browser's request is for: the one it named (`callId`), else the
/// line's only call. The SIP task checks it where it acts, so a call that ended and
/// another that arrived in between can never be confused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnCall {
    pub line: LineId,
    pub call: Option<CallRef>,
}

impl OnCall {
    /// The line's only call.
    pub fn only(line: LineId) -> OnCall {
        OnCall { line, call: None }
    }
}

/// Where a transfer sends a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    /// Blind: this number (already checked by the dial policy).
    Number(String),
    /// Attended: the far end of this other call of the line, which it replaces.
    Call(CallRef),
}

/// A call as the session may ask about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    pub call: CallRef,
    pub peer: String,
    pub incoming: bool,
    pub state: CallState,
    /// We hold the far end (the browser talks in another call, or asked for it).
    pub on_hold: bool,
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
        on: OnCall,
        reply: oneshot::Sender<Result<(), CallControlError>>,
    },
    HangUp {
        on: OnCall,
        code: u16,
        /// What the browser is told, when not the usual.
        why: Option<String>,
        reply: oneshot::Sender<Result<(), CallControlError>>,
    },
    Calls {
        line: LineId,
        reply: oneshot::Sender<Vec<CallInfo>>,
    },
    Dtmf {
        on: OnCall,
        digits: String,
        reply: oneshot::Sender<Result<(), CallControlError>>,
    },
    /// A key press the browser sent itself, for a far end that needs it as INFO.
    InfoDtmf {
        line: LineId,
        call: CallRef,
        digit: char,
    },
    Hold {
        on: OnCall,
        hold: bool,
        reply: oneshot::Sender<Result<(), CallControlError>>,
    },
    /// Transfer of the call (a number checked by the dial policy, or another call).
    Transfer {
        on: OnCall,
        to: TransferTarget,
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

    pub async fn dtmf(&self, on: OnCall, digits: String) -> Result<Result<(), CallControlError>, SipGone> {
        self.ask(|reply| Command::Dtmf { on, digits, reply }).await
    }

    /// Transfer: the far end is asked (REFER) to call `to`; answered once the REFER
    /// is on its way, the progress comes as [`CallNotice::Transfer`].
    pub async fn transfer(
        &self,
        on: OnCall,
        to: TransferTarget,
    ) -> Result<Result<(), CallControlError>, SipGone> {
        self.ask(|reply| Command::Transfer { on, to, reply }).await
    }

    pub fn info_dtmf(&self, line: LineId, call: CallRef, digit: char) {
        let _ = self.commands.send(Command::InfoDtmf { line, call, digit });
    }

    /// Puts the far end on hold (`hold`) or takes it off; taking a call off hold puts
    /// the line's other calls on hold (the browser talks in one at a time). The command
    /// leaves at once; the returned future resolves when the far end has answered (or
    /// refused).
    pub fn hold(
        &self,
        on: OnCall,
        hold: bool,
    ) -> impl Future<Output = Result<Result<(), CallControlError>, SipGone>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = self.commands.send(Command::Hold { on, hold, reply }).is_ok();
        async move {
            if !sent {
                return Err(SipGone);
            }
            rx.await.map_err(|_| SipGone)
        }
    }

    /// Unregisters a line (ending its calls first); [`LineEvent::Removed`] follows.
    pub fn remove_line(&self, line: LineId) {
        let _ = self.commands.send(Command::RemoveLine(line));
    }

    /// Places a call; the line's other calls are put on hold.
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

    /// Answers a ringing call; the line's other calls are put on hold.
    pub async fn accept(&self, on: OnCall) -> Result<Result<(), CallControlError>, SipGone> {
        self.ask(|reply| Command::Accept { on, reply }).await
    }

    pub async fn hang_up(&self, on: OnCall, code: u16) -> Result<Result<(), CallControlError>, SipGone> {
        self.ask(|reply| Command::HangUp {
            on,
            code,
            why: None,
            reply,
        })
        .await
    }

    /// Ends a call for a reason of the gateway's own (a media timeout), which the
    /// browser is told in the call's final state.
    pub fn end_call(&self, line: LineId, call: CallRef, why: String) {
        let (reply, _) = oneshot::channel();
        let _ = self.commands.send(Command::HangUp {
            on: OnCall {
                line,
                call: Some(call),
            },
            code: 480,
            why: Some(why),
            reply,
        });
    }

    /// The line's calls, oldest first.
    pub async fn calls(&self, line: LineId) -> Result<Vec<CallInfo>, SipGone> {
        self.ask(|reply| Command::Calls { line, reply }).await
    }

    pub async fn stats(&self) -> Result<DriverStats, SipGone> {
        self.ask(Command::Stats).await
    }

    /// Unregisters every line (bounded in time) and stops the task.
    pub async fn shutdown(&self) {
        let _ = self.ask(Command::Shutdown).await;
    }
}
