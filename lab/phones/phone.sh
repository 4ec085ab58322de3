#!/bin/bash
# baresip 1.0.0 as a far-end phone of the lab PBX, loopback only. It registers
# USER, answers (auto) or rings (manual), can dial, plays a sine tone into its
# calls and records what it receives. Every file it writes is in RUN_DIR.
#
#   lab/phones/phone.sh start RUN_DIR USER PASS SIP_PORT PBX_PORT RTP_RANGE [ANSWER] [CTRL_PORT] [TRANSPORT] [DIAL]
#       background; returns once the REGISTER got its 200 OK (or fails, exit 1,
#       with the log tail on stderr); prints baresip's pid on stdout
#   lab/phones/phone.sh run   RUN_DIR ...same arguments...
#       foreground: `exec`s baresip (log still to RUN_DIR/baresip.log), so a
#       test can own the process; then `phone.sh wait RUN_DIR registered`
#   lab/phones/phone.sh stop RUN_DIR          SIGTERM (baresip hangs up and
#       unregisters), SIGKILL after 3 s; by the pid in RUN_DIR/baresip.pid
#   lab/phones/phone.sh log RUN_DIR           print the log (RUN_DIR/baresip.log)
#   lab/phones/phone.sh wait RUN_DIR WHAT [SECONDS] [COUNT]   wait (default 10 s) until
#       the log shows WHAT: registered | incoming (a call arrived) | ringing (our
#       call got 180/183) | established | closed | any grep -E regex; exit 1 on
#       timeout. These match anywhere in the log, earlier calls included: COUNT
#       (default 1) is how many matching lines to wait for (2 = the second call's)
#   lab/phones/phone.sh last RUN_DIR          newest recording of RECEIVED audio
#       (RUN_DIR/rec/dump-<time>-dec.wav; -enc.wav is what was sent)
#
#   RUN_DIR     created if missing: config, accounts, baresip.log, baresip.pid,
#               rec/ (recordings), tone.wav (generated with sox)
#   USER PASS   lab user: 880..898 (password = user) or 1000..1003 (secret)
#   SIP_PORT    own SIP port on 127.0.0.1, UDP + TCP; baresip also listens on
#               SIP_PORT+1/tcp (TLS), so leave that free as well
#   PBX_PORT    the lab Kamailio on 127.0.0.1 (outbound proxy + registrar)
#   RTP_RANGE   e.g. 20000-20019 (baresip takes RTP and RTCP ports from it)
#   ANSWER      auto (default: answers at once) | manual (180 and rings until
#               `ctrl.py PORT accept`, a CANCEL, or `hangup` = rejects)
#   CTRL_PORT   ctrl_tcp on 127.0.0.1:CTRL_PORT (lab/phones/ctrl.py), 0 = off (default)
#   TRANSPORT   udp (default) | tcp: transport to the PBX
#   DIAL        optional: call this at start (a number -> sip:N@127.0.0.1, or a SIP URI)
#
# Environment: BS_TONE=1000 (Hz of the tone played into calls), BS_AUDIO=file.wav
# (8 kHz mono s16 WAV to play instead), BS_LIFETIME=600 (baresip -t: quits,
# hanging up, after that many seconds, a guard against leaked phones; 0 = never),
# BS_SIP_TRACE=1 (baresip -s: every SIP message in the log), BS_CODECS=PCMU/8000/1,PCMA/8000/1
# (baresip's audio_codecs, in order; G722/16000/1 is loaded too), BS_MEDIAENC=srtp|srtp-mand
# (SDES-SRTP, RFC 4568: offered best-effort or required; srtp.so is loaded for it).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"

usage() { sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd="$1"; D="$2"; shift 2
LOG="$D/baresip.log"; PIDF="$D/baresip.pid"

is_baresip() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null && grep -q baresip "/proc/$1/comm" 2>/dev/null; }

# WHAT -> extended regex on baresip's log (baresip 1.0.0 wording)
pattern() {
  case "$1" in
    registered)  echo ': \{[0-9]+/(UDP|TCP)/v4\} 200 OK';;
    incoming)    echo 'Incoming call from|answering call on line';;
    ringing)     echo 'SIP Progress: 18[03]';;
    established) echo 'Call established: ';;
    closed)      echo 'terminated \(duration|session closed';;
    *)           echo "$1";;
  esac
}

case "$cmd" in
  stop)
    pid="$(cat "$PIDF" 2>/dev/null || true)"
    if is_baresip "$pid"; then
      kill -TERM "$pid"
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$PIDF"; exit 0;;
  log)  cat "$LOG"; exit 0;;
  last) ls -1t "$D"/rec/dump-*-dec.wav 2>/dev/null | head -1; exit 0;;
  wait)
    [ $# -ge 1 ] || usage
    re="$(pattern "$1")"; secs="${2:-10}"; count="${3:-1}"
    end=$(( $(date +%s%N) + secs * 1000000000 ))
    while [ "$(date +%s%N)" -lt "$end" ]; do
      [ "$(grep -Ec -- "$re" "$LOG" 2>/dev/null || true)" -ge "$count" ] && exit 0
      sleep 0.05
    done
    echo "phone.sh: '$1' not in $LOG within ${secs}s" >&2; exit 1;;
  start|run) ;;
  *) usage;;
esac

[ $# -ge 5 ] || usage
USER_="$1"; PASS="$2"; SIP_PORT="$3"; PBX_PORT="$4"; RTP="$5"
ANSWER="${6:-auto}"; CTRL="${7:-0}"; TRANSPORT="${8:-udp}"; DIAL="${9:-}"
case "$ANSWER" in auto|manual) ;; *) echo "ANSWER must be auto|manual" >&2; exit 2;; esac
case "$TRANSPORT" in udp|tcp) ;; *) echo "TRANSPORT must be udp|tcp" >&2; exit 2;; esac

mkdir -p "$D/rec"
D="$(cd "$D" && pwd)"; LOG="$D/baresip.log"; PIDF="$D/baresip.pid"
if is_baresip "$(cat "$PIDF" 2>/dev/null || true)"; then
  echo "phone.sh: baresip already running in $D (pid $(cat "$PIDF"))" >&2; exit 1
fi

AUDIO="${BS_AUDIO:-$D/tone.wav}"
[ -n "${BS_AUDIO:-}" ] || "$HERE/gen_audio.sh" "$AUDIO" "${BS_TONE:-1000}" 120

tp=""; [ "$TRANSPORT" = tcp ] && tp=";transport=tcp"
# one account: registers at the PBX (outbound proxy) every 600 s
cat > "$D/accounts" <<ACC
<sip:$USER_@127.0.0.1$tp>;auth_user=$USER_;auth_pass=$PASS;outbound="sip:127.0.0.1:$PBX_PORT$tp";regint=600;answermode=$ANSWER;audio_codecs=${BS_CODECS:-PCMU/8000/1,PCMA/8000/1};audio_source=aufile,$AUDIO;ptime=20${BS_MEDIAENC:+;mediaenc=$BS_MEDIAENC}
ACC
: > "$D/contacts"

# received audio goes to an aubridge device (no sound card needed); the
# sndfile filter records both directions to $D/rec/dump-*-{dec,enc}.wav
cat > "$D/config" <<CFG
poll_method		epoll
sip_listen		127.0.0.1:$SIP_PORT
call_local_timeout	120
call_max_calls		4
audio_path		/usr/share/baresip
audio_player		aubridge,lab-sink-$SIP_PORT
audio_source		aufile,$AUDIO
audio_alert		aubridge,lab-alert-$SIP_PORT
ausrc_srate		8000
auplay_srate		8000
ausrc_channels		1
auplay_channels		1
audio_level		no
ausrc_format		s16
auplay_format		s16
auenc_format		s16
audec_format		s16
audio_buffer		20-160
rtp_tos			0
rtp_ports		$RTP
rtcp_mux		no
jitter_buffer_delay	0-10
rtp_stats		yes
rtp_timeout		0
net_interface		127.0.0.1
dns_server		127.0.0.1:53
module_path		/usr/lib/baresip/modules
module			g711.so
module			g722.so
module			sndfile.so
module			aufile.so
module			aubridge.so
$( [ -n "${BS_MEDIAENC:-}" ] && printf 'module\t\t\tsrtp.so\n' )
module_tmp		uuid.so
module_tmp		account.so
module_app		menu.so
$( [ "$CTRL" != 0 ] && printf 'module_app\t\tctrl_tcp.so\nctrl_tcp_listen\t\t127.0.0.1:%s\n' "$CTRL" )
snd_path		$D/rec
statmode_default	off
CFG

ARGS=(-f "$D")
[ "${BS_LIFETIME:-600}" != 0 ] && ARGS+=(-t "${BS_LIFETIME:-600}")
[ "${BS_SIP_TRACE:-0}" = 1 ] && ARGS+=(-s)
if [ -n "$DIAL" ]; then
  case "$DIAL" in sip:*) ;; *) DIAL="sip:$DIAL@127.0.0.1";; esac
  ARGS+=(-e "/dial $DIAL")
fi

if [ "$cmd" = run ]; then
  echo $$ > "$PIDF"
  exec baresip "${ARGS[@]}" </dev/null >"$LOG" 2>&1
fi

# start: background (own session, so a terminal's signals don't reach it)
setsid baresip "${ARGS[@]}" </dev/null >"$LOG" 2>&1 &
pid=$!
echo "$pid" > "$PIDF"
reg="$USER_@127.0.0.1: \{[0-9]+/(UDP|TCP)/v4\}"
for _ in $(seq 1 100); do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "phone.sh: baresip exited, $LOG:" >&2; tail -20 "$LOG" >&2; exit 1
  fi
  if grep -Eq "$reg 200 OK" "$LOG"; then echo "$pid"; exit 0; fi
  if grep -Eq "($reg|reg: sip:$USER_@127.0.0.1:) [3-6][0-9][0-9] " "$LOG"; then
    echo "phone.sh: REGISTER of $USER_ failed, $LOG:" >&2; tail -20 "$LOG" >&2
    kill -TERM "$pid" 2>/dev/null || true; exit 1
  fi
  sleep 0.05
done
echo "phone.sh: no 200 OK to REGISTER within 5 s, $LOG:" >&2; tail -20 "$LOG" >&2
kill -TERM "$pid" 2>/dev/null || true; exit 1
