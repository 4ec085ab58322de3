#!/bin/bash
# Runs one lab/sipp scenario as a far end, loopback only, with every file it
# writes in OUT_DIR. Foreground; `exec`s sipp, so this script's pid IS sipp's
# pid and its exit status is sipp's (0 = every call succeeded, see README).
#
#   lab/sipp/run.sh SCENARIO OUT_DIR PBX_PORT SIP_PORT MEDIA_PORT [sipp options...]
#
#   SCENARIO    name in lab/sipp (uas_busy, uas_busy.xml) or a path to an .xml
#   OUT_DIR     created if missing; sipp runs in it and writes there:
#                 NAME.msgs       every SIP message sent/received (-trace_msg)
#                 NAME.short.csv  one line per message (-trace_shortmsg)
#                 NAME.errors     unexpected messages / failures (-trace_err)
#                 NAME.screen     final statistics screens, with the per-step
#                                 Messages/Retrans/Timeout/Unexpected table
#                 NAME.out        sipp's stdout+stderr
#               NAME = <scenario>-<SIP_PORT> (unique per instance)
#   PBX_PORT    lab Kamailio on 127.0.0.1:PBX_PORT (the remote host of UACs,
#               REGISTER; a UAS replies to whoever sent the INVITE anyway)
#   SIP_PORT    sipp's own SIP port (-p); a UAS must use the port it registered from
#   MEDIA_PORT  sipp's RTP port (-mp): sipp binds MEDIA_PORT and MEDIA_PORT+2
#               (audio/video echo) and its control socket on MEDIA_PORT+1 (-cp),
#               so give every instance its own block of 3 UDP ports
#   sipp options  e.g. -s 1001 (the callee / own user), -key caller 1000
#               -au 1000 -ap secret, -d 2000, -t t1 (TCP), -timeout 60s
#
# Always added: -i/-mi/-ci 127.0.0.1 -bind_local -m 1 -nostdin -rtp_echo
# -timeout ${SIPP_TIMEOUT:-30s} -timeout_error   (SIPP_ECHO=0 drops -rtp_echo;
# a later -timeout in the options overrides the default one)
#
#   lab/sipp/run.sh register   /tmp/t 17000 17010 17100 -s 1001 -ap secret
#   lab/sipp/run.sh uas_busy   /tmp/t 17000 17010 17100 -s 1001 &
#   lab/sipp/run.sh uac_call_then_bye /tmp/t 17000 17020 17110 -s 1001 \
#        -key caller 1000 -au 1000 -ap secret -d 2000
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ $# -lt 5 ]; then
  sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
SC="$1"; OUT="$2"; PBX="$3"; SIP="$4"; MP="$5"; shift 5
case "$SC" in
  */*) ;;
  *) SC="$HERE/${SC%.xml}.xml";;
esac
[ -r "$SC" ] || { echo "run.sh: no scenario $SC" >&2; exit 2; }
SC="$(cd "$(dirname "$SC")" && pwd)/$(basename "$SC")"
mkdir -p "$OUT"
cd "$OUT"
NAME="$(basename "$SC" .xml)-$SIP"
ARGS=(-sf "$SC" -i 127.0.0.1 -mi 127.0.0.1 -ci 127.0.0.1 -bind_local
      -p "$SIP" -mp "$MP" -cp "$((MP + 1))" -m 1 -nostdin
      -timeout "${SIPP_TIMEOUT:-30s}" -timeout_error
      -trace_msg -message_file "$NAME.msgs"
      -trace_shortmsg -shortmessage_file "$NAME.short.csv"
      -trace_err -error_file "$NAME.errors"
      -trace_screen -screen_file "$NAME.screen")
[ "${SIPP_ECHO:-1}" = 0 ] || ARGS+=(-rtp_echo)
exec sipp "${ARGS[@]}" "$@" "127.0.0.1:$PBX" >"$NAME.out" 2>&1
