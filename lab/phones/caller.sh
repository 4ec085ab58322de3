#!/bin/bash
# A baresip far end that CALLS: registers USER, dials TARGET through the lab
# PBX, plays a tone (BS_TONE, default 1000 Hz) into the call, records what it
# receives, and quits after SECONDS (counted from start), hanging up first.
# Foreground; exit 0 if the call was established, 1 if not.
#
#   lab/phones/caller.sh RUN_DIR USER PASS SIP_PORT PBX_PORT RTP_RANGE TARGET SECONDS [TRANSPORT]
#   lab/phones/caller.sh /tmp/c 1002 secret 17240 17000 17340-17359 1001 4
#
# TARGET: a number (-> sip:N@127.0.0.1) or a SIP URI. Afterwards:
# lab/phones/phone.sh log RUN_DIR, lab/phones/phone.sh last RUN_DIR (recording).
# For a caller you drive yourself (dial, hang up when you want) use
# phone.sh start ... manual CTRL_PORT and lab/phones/ctrl.py instead.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ $# -lt 8 ]; then sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; fi
D="$1"; SECS="$8"
BS_LIFETIME="$SECS" "$HERE/phone.sh" run "$D" "$2" "$3" "$4" "$5" "$6" manual 0 "${9:-udp}" "$7" || true
grep -q 'Call established: ' "$D/baresip.log"
