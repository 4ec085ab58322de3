#!/bin/bash
# Runs the lab PBX (Kamailio 5.6, registrar + proxy with digest auth) in the
# foreground on 127.0.0.1:PORT, UDP and TCP. Stop it with SIGTERM / Ctrl-C.
#
#   lab/pbx/kamailio.sh [RUN_DIR] [PORT]        defaults: lab/run/pbx 5060
#
# RUN_DIR receives the control socket: kamcmd -s unix:RUN_DIR/kamailio_ctl ul.dump
# LAB_DEBUG=1 logs every request and reply. LAB_DB=DIR uses another db_text directory
# (a `subscriber` and a `version` table, as in lab/pbx/db: scripts/bench.sh writes one
# with hundreds of users). LAB_TLS_PORT=P adds a TLS listener on 127.0.0.1:P: its
# certificate (CN and SAN 127.0.0.1 and localhost) is signed by a lab CA made in RUN_DIR
# on first use: RUN_DIR/tls/ca.pem is what a client must trust. The integration tests
# start it this way.
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
if [ -n "${LAB_TLS_PORT:-}" ]; then
  T="$RUN/tls"
  if [ ! -s "$T/server.pem" ]; then
    mkdir -p "$T"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=sipline lab CA" \
      -keyout "$T/ca.key" -out "$T/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
      -keyout "$T/server.key" -out "$T/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$T/ext.cnf"
    openssl x509 -req -in "$T/server.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial \
      -days 30 -extfile "$T/ext.cnf" -out "$T/server.pem" 2>/dev/null
  fi
  printf '[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\nprivate_key = %s\ncertificate = %s\n' \
    "$T/server.key" "$T/server.pem" > "$T/tls.cfg"
  ARGS+=(-A "LAB_TLS_PORT=$LAB_TLS_PORT" -A "LAB_TLS_CFG=\"$T/tls.cfg\"")
fi
exec kamailio -DD "${ARGS[@]}"
