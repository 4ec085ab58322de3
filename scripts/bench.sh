#!/usr/bin/env bash
# The end-to-end capacity benchmark (docs/performance.md): Kamailio with a generated pool
# of accounts, a sipp UAS echoing RTP as the far end, the release gateway, and
# sipline-load as N browsers (WebSocket JSON-RPC + WebRTC with str0m) each calling the
# far end for HOLD seconds. For each run it prints the gateway's CPU as % of one core per
# call (utime+stime of the gateway process only, over a steady window while every call
# is up), its RSS per call, and what sipline-load measured (loss both ways, jitter as
# each side sees it, setup and first-audio p50/p99).
#
#   scripts/bench.sh                      # the full table: 50/200/500 relayed, 50/200 transcoded
#   scripts/bench.sh pcmu:50 opus:20      # chosen runs (codec:calls)
#   HOLD=60 WINDOW=30 RAMP=25 scripts/bench.sh ...
#
# Everything runs on 127.0.0.1 (Kamailio 17900, sipline 17902/18900, sipp 17905, RTP
# 50200-51999), in a temporary directory that is removed at the end. Needs the lab
# (lab/install.sh). Results also go to bench-results.jsonl in the current directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
RUNS=("$@")
[ ${#RUNS[@]} -gt 0 ] || RUNS=(pcmu:50 pcmu:200 pcmu:500 opus:50 opus:200)
HOLD="${HOLD:-60}"          # seconds each call lasts
WINDOW="${WINDOW:-30}"      # seconds of the steady window (all calls up)
RAMP="${RAMP:-25}"          # calls started per second
ACCOUNTS="${ACCOUNTS:-600}" # generated accounts 2000..2000+ACCOUNTS-1
PBX_PORT=17900 SIP_PORT=17902 HTTP_PORT=18900 SIPP_SIP=17905 SIPP_MEDIA=17910
RESULTS="${RESULTS:-$PWD/bench-results.jsonl}"

lab/install.sh >/dev/null
echo "building the release gateway and sipline-load..." >&2
cargo build --release --locked -p sipline -p sipline-load >&2

WORK="$(mktemp -d /tmp/sipline-bench.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---- Kamailio with ACCOUNTS generated users (password = user name) ----------------------
mkdir -p "$WORK/db" "$WORK/pbx"
cp lab/pbx/db/version "$WORK/db/version"
{
  head -1 lab/pbx/db/subscriber
  i=1
  for u in 1001 $(seq 2000 $((2000 + ACCOUNTS - 1))); do
    p="$u"; [ "$u" = 1001 ] && p=secret
    echo "$i:$u:127.0.0.1:$p:x:x"
    i=$((i + 1))
  done
} > "$WORK/db/subscriber"
LAB_DB="$WORK/db" LAB_PBX_SHM=256 lab/pbx/kamailio.sh "$WORK/pbx" "$PBX_PORT" > "$WORK/kamailio.log" 2>&1 &
PIDS+=($!)
sip_ping() {
  python3 - "$1" <<'PY'
import socket, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0)); s.settimeout(0.2)
lp = s.getsockname()[1]
msg = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bKbench\r\n"
       f"Max-Forwards: 70\r\nFrom: <sip:bench@127.0.0.1>;tag=b\r\nTo: <sip:127.0.0.1>\r\n"
       f"Call-ID: bench\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
s.sendto(msg.encode(), ("127.0.0.1", port))
try:
    sys.exit(0 if s.recv(4096).startswith(b"SIP/2.0 200") else 1)
except OSError:
    sys.exit(1)
PY
}
for _ in $(seq 1 100); do sip_ping "$PBX_PORT" && break; sleep 0.1; done

# ---- the far end: sipp as 1001, answering every call and echoing its RTP -----------------
lab/sipp/run.sh register "$WORK/sipp" "$PBX_PORT" "$SIPP_SIP" "$SIPP_MEDIA" -s 1001 -ap secret >/dev/null
SIPP_TIMEOUT=100000s lab/sipp/run.sh uas_answer_wait_bye "$WORK/sipp" "$PBX_PORT" "$SIPP_SIP" "$SIPP_MEDIA" \
  -s 1001 -m 100000 -l 5000 &
PIDS+=($!)

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
CLK_TCK="$(getconf CLK_TCK)"

run_one() {
  local codec="$1" calls="$2"
  local config="$WORK/sipline-$codec-$calls.toml"
  cat > "$config" <<EOF
[http]
listen = "127.0.0.1:$HTTP_PORT"
max_sessions_per_ip = 100000
max_connections_per_ip = 100000
requests_per_second = 1000
request_burst = 1000
[sip]
listen = "127.0.0.1:$SIP_PORT"
registrar = "sip:127.0.0.1:$PBX_PORT"
[pool]
domain = "127.0.0.1"
range = { from = 2000, to = $((2000 + ACCOUNTS - 1)) }
[media]
rtp_ports = "50200-51999"
sip_codecs = ["PCMU"]
browser_codecs = ["$( [ "$codec" = opus ] && echo opus || echo PCMU )"]
EOF
  RUST_LOG=warn target/release/sipline --config "$config" > "$WORK/sipline.log" 2>&1 &
  local gw=$!
  PIDS+=($gw)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null && break; sleep 0.1; done
  local rss0; rss0="$(rss_kib "$gw")"
  local ramp_secs=$(( (calls + RAMP - 1) / RAMP ))
  target/release/sipline-load --url "ws://127.0.0.1:$HTTP_PORT/api/v1/ws" --calls "$calls" --number 1001 \
    --codec "$codec" --hold-secs "$HOLD" --ramp "$RAMP" --json --progress-secs 10 \
    > "$WORK/load.json" 2> "$WORK/load.err" &
  local load=$!
  # every call is up some seconds after the ramp: measure the steady window then
  sleep $(( ramp_secs + 8 ))
  local t0 c0 t1 c1 rss1
  t0="$(date +%s.%N)"; c0="$(ticks "$gw")"
  sleep "$WINDOW"
  t1="$(date +%s.%N)"; c1="$(ticks "$gw")"; rss1="$(rss_kib "$gw")"
  local ok=0
  wait "$load" || ok=$?
  kill "$gw" 2>/dev/null || true
  wait "$gw" 2>/dev/null || true
  python3 - "$codec" "$calls" "$t0" "$c0" "$t1" "$c1" "$rss0" "$rss1" "$CLK_TCK" "$ok" "$WORK/load.json" "$RESULTS" <<'PY'
import json, sys
codec, calls, t0, c0, t1, c1, rss0, rss1, tck, ok, path, results = sys.argv[1:]
calls = int(calls)
secs = float(t1) - float(t0)
cpu = (int(c1) - int(c0)) / int(tck) / secs  # cores
try:
    load = json.load(open(path))
except Exception as e:
    load = {"error": f"no JSON from sipline-load: {e}"}
row = {
    "codec": codec, "calls": calls, "window_s": round(secs, 1),
    "gateway_cores": round(cpu, 4),
    "pct_core_per_call": round(cpu * 100 / calls, 4),
    "rss_kib_per_call": round((int(rss1) - int(rss0)) / calls, 1),
    "load_exit": int(ok), "load": load,
}
with open(results, "a") as f:
    f.write(json.dumps(row) + "\n")
s = load.get("summary", load)
def g(*keys):
    v = s
    for k in keys:
        v = v.get(k, {}) if isinstance(v, dict) else {}
    return v if v != {} else "-"
print(f"{codec:5} {calls:4} calls: {row['pct_core_per_call']:.3f} % of a core per call "
      f"({cpu*100:.1f} % in all), {row['rss_kib_per_call']:.0f} KiB RSS per call, "
      f"load exit {ok}; load: {json.dumps(s)[:600]}")
PY
}

echo "runs: ${RUNS[*]} (hold ${HOLD}s, window ${WINDOW}s, ramp ${RAMP}/s); machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" >&2
for r in "${RUNS[@]}"; do
  run_one "${r%%:*}" "${r##*:}"
done
