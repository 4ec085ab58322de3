#!/bin/bash
# Runs the lab PBX (Kamailio 5.6, registrar + proxy with digest auth) in the
# foreground on 127.0.0.1:PORT, UDP and TCP. Stop it with SIGTERM / Ctrl-C.
#
#   lab/pbx/kamailio.sh [RUN_DIR] [PORT]        defaults: lab/run/pbx 5060
#
# RUN_DIR receives the control socket: kamcmd -s unix:RUN_DIR/kamailio_ctl ul.dump
# LAB_DEBUG=1 logs every request and reply. LAB_DB=DIR uses another db_text directory
# (a `subscriber` and a `version` table, as in lab/pbx/db: scripts/bench.sh writes one
# with hundreds of users). The integration tests start it this way.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
RUN="${1:-$HERE/../run/pbx}"
PORT="${2:-5060}"
mkdir -p "$RUN"
RUN="$(cd "$RUN" && pwd)"
ARGS=(-f "$HERE/kamailio.cfg" -Y "$RUN" -E -m "${LAB_PBX_SHM:-32}" -M "${LAB_PBX_PKG:-8}"
      -A "LAB_IP=127.0.0.1" -A "LAB_PORT=$PORT"
      -A "LAB_DBURL=\"text://${LAB_DB:-$HERE/db}\"" -A "LAB_CTL=\"unix:$RUN/kamailio_ctl\"")
[ "${LAB_DEBUG:-0}" = 1 ] && ARGS+=(-A LAB_DEBUG)
exec kamailio -DD "${ARGS[@]}"
