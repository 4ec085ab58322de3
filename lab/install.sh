#!/bin/bash
# Installs the real peers the tests use (Debian packages), only those missing:
# Kamailio (the PBX, with its TLS module), sipp and baresip (far ends), redis-server (the cluster tests start
# their own), Chromium (the browser, driven by
# Playwright from tests/browser; `npm ci` there is run by scripts/test.sh), and the
# tools for loopback-only network namespaces (and nft, to cut a port inside one).
# Retries while another apt/dpkg holds the lock. Needs root (CI runs as root).
set -euo pipefail
PKGS=(kamailio kamailio-tls-modules sip-tester baresip-core sox tcpdump chromium iproute2 util-linux openssl curl redis-server nftables)
command -v node >/dev/null 2>&1 || PKGS+=(nodejs npm)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "lab: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
try() { for i in 1 2 3 4 5 6 7 8 9 10; do "$@" && return 0; echo "apt busy or failed, retry in 20 s ($i)"; sleep 20; done; return 1; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
[ -n "$(find /var/lib/apt/lists -name '*_Packages' 2>/dev/null | head -1)" ] || try $SUDO apt-get update -q
try $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" || { try $SUDO apt-get update -q && try $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"; }
# Debian's packaged kamailio service must not hold port 5060; the lab runs its own.
command -v systemctl >/dev/null && $SUDO systemctl disable --now kamailio >/dev/null 2>&1 || true
# Nor its redis service port 6379: the cluster tests start their own redis-server.
command -v systemctl >/dev/null && $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
