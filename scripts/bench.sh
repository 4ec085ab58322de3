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
#   scripts/bench.sh idle:50              # 50 idle sessions (registered, WebRTC up, no call)
#   scripts/bench.sh signal:50 signal:100 # signalling capacity: sessions registering and
#                                         # calling at 50, then 100 a second
#   scripts/bench.sh floor:500            # the same packets through a bare UDP relay
#   HOLD=60 WINDOW=30 RAMP=25 scripts/bench.sh ...
#   PERF=/tmp/prof scripts/bench.sh pcmu:50   # also perf-record the gateway over the window
#                                             # (needs perf; kernel.perf_event_paranoid <= 2)
#
# Everything runs on 127.0.0.1 (Kamailio 17900, sipline 17902/18900, sipp 17905, RTP
# 50200-54999, the bare relay of floor:N 56000-57999), in a temporary directory that is removed at the end.
# Needs the lab (lab/install.sh). Results also go to bench-results.jsonl in the current directory.
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
cargo build --release --locked -p sipline -p sipline-load --bins --example udp_floor >&2

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

# write_config FILE CODEC: the gateway's configuration for a run
write_config() {
  local codec="$2"
  cat > "$1" <<EOF
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
rtp_ports = "50200-54999"
sip_codecs = ["PCMU"]
browser_codecs = ["$( [ "$codec" = opus ] && echo opus || echo PCMU )"]
EOF
}

# start_gateway CONFIG: the release gateway (under $GATEWAY_ENV, e.g. a profiler's
# preload), up when /healthz answers; its pid in GW
start_gateway() {
  RUST_LOG=warn env ${GATEWAY_ENV:-} target/release/sipline --config "$1" > "$WORK/sipline.log" 2>&1 &
  GW=$!
  PIDS+=($GW)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null && break; sleep 0.1; done
}

run_one() {
  local codec="$1" calls="$2"
  local config="$WORK/sipline-$codec-$calls.toml"
  write_config "$config" "$codec"
  start_gateway "$config"
  local gw=$GW
  local rss0; rss0="$(rss_kib "$gw")"
  # idle:N: N sessions registered with WebRTC up and no call (what waiting agents cost)
  local load_codec="$codec" idle=""
  if [ "$codec" = idle ]; then load_codec=pcmu; idle=--idle; fi
  local ramp_secs=$(( (calls + RAMP - 1) / RAMP ))
  target/release/sipline-load --url "ws://127.0.0.1:$HTTP_PORT/api/v1/ws" --calls "$calls" --number 1001 \
    --codec "$load_codec" --hold-secs "$HOLD" --ramp "$RAMP" --json --progress-secs 10 $idle \
    > "$WORK/load.json" 2> "$WORK/load.err" &
  local load=$!
  # every call is up some seconds after the ramp: measure the steady window then
  sleep $(( ramp_secs + 8 ))
  local t0 c0 t1 c1 rss1
  t0="$(date +%s.%N)"; c0="$(ticks "$gw")"
  if [ -n "${PERF:-}" ]; then
    # a profile of the gateway over the steady window (PERF=dir keeps perf.data there)
    mkdir -p "$PERF"
    perf record -q -F 997 --call-graph dwarf,32768 -p "$gw" -o "$PERF/perf-$codec-$calls.data" \
      -- sleep "$WINDOW" >/dev/null 2>&1 || sleep "$WINDOW"
  else
    sleep "$WINDOW"
  fi
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
unit = "sessions" if codec == "idle" else "calls"
print(f"{codec:5} {calls:4} {unit}: {row['pct_core_per_call']:.3f} % of a core per {unit[:-1]} "
      f"({cpu*100:.1f} % in all), {row['rss_kib_per_call']:.0f} KiB RSS per {unit[:-1]}, "
      f"load exit {ok}; load: {json.dumps(s)[:600]}")
PY
}

# signal:R: the SIP task's capacity. SIGNAL_SESSIONS sessions (default 500) start at R a
# second, each registering, bringing WebRTC up and placing a 1 s call: R registrations and
# R call set-ups a second. Prints the registration and set-up times and any failure; the
# rate is sustained when nothing fails and the times stay flat.
run_signalling() {
  local rate="$1" sessions="${SIGNAL_SESSIONS:-500}"
  local config="$WORK/sipline-signal-$rate.toml"
  write_config "$config" pcmu
  start_gateway "$config"
  local gw=$GW
  local ok=0
  target/release/sipline-load --url "ws://127.0.0.1:$HTTP_PORT/api/v1/ws" --calls "$sessions" --number 1001 \
    --hold-secs 1 --ramp "$rate" --json --progress-secs 0 --gateway-pid "$gw" --threads 2 \
    > "$WORK/load.json" 2> "$WORK/load.err" || ok=$?
  kill "$gw" 2>/dev/null || true
  wait "$gw" 2>/dev/null || true
  python3 - "$rate" "$sessions" "$ok" "$WORK/load.json" "$RESULTS" <<'PY'
import json, sys
rate, sessions, ok, path, results = sys.argv[1:]
try:
    s = json.load(open(path))
except Exception as e:
    s = {"error": f"no JSON from sipline-load: {e}"}
s.pop("calls", None)
with open(results, "a") as f:
    f.write(json.dumps({"signal_rate": float(rate), "sessions": int(sessions), "load_exit": int(ok), "load": s}) + "\n")
def spread(k):
    v = s.get(k, {})
    return f"p50 {v.get('p50')} p99 {v.get('p99')} max {v.get('max')}"
cpu = s.get("gateway_cpu_secs")
wall = s.get("wall_secs") or 0
print(f"signal {float(rate):5.0f}/s x {sessions}: {s.get('ok')} ok, {s.get('failed')} failed {s.get('failures', {})}; "
      f"registered ms {spread('register_ms')}; setup ms {spread('setup_ms')}; "
      f"gateway {cpu} CPU-s over {wall} s, load exit {ok}")
PY
}

# floor:N: the same packets through a plain relay (crates/load/examples/udp_floor.rs: a
# tokio task per call receiving and sending on, no SRTP, no str0m, no bridge), measured
# the same way: what the kernel and the runtime alone cost per call on this machine.
run_floor() {
  local calls="$1" port=56000
  target/release/examples/udp_floor relay --calls "$calls" --port "$port" 2> "$WORK/floor.err" &
  local relay=$!
  PIDS+=($relay)
  sleep 0.5
  target/release/examples/udp_floor peers --calls "$calls" --port "$port" --secs "$HOLD" > "$WORK/floor.out" &
  local peers=$!
  sleep 8
  local t0 c0 t1 c1
  t0="$(date +%s.%N)"; c0="$(ticks "$relay")"
  sleep "$WINDOW"
  t1="$(date +%s.%N)"; c1="$(ticks "$relay")"
  wait "$peers" || true
  kill "$relay" 2>/dev/null || true
  wait "$relay" 2>/dev/null || true
  python3 - "$calls" "$t0" "$c0" "$t1" "$c1" "$CLK_TCK" "$(cat "$WORK/floor.out")" "$RESULTS" <<'PY'
import json, sys
calls, t0, c0, t1, c1, tck, out, results = sys.argv[1:]
cpu = (int(c1) - int(c0)) / int(tck) / (float(t1) - float(t0))
row = {"floor": True, "calls": int(calls), "relay_cores": round(cpu, 4),
       "pct_core_per_call": round(cpu * 100 / int(calls), 4), "peers": out}
with open(results, "a") as f:
    f.write(json.dumps(row) + "\n")
print(f"floor {int(calls):4} calls: {row['pct_core_per_call']:.3f} % of a core per call ({cpu*100:.1f} % in all); {out}")
PY
}

echo "runs: ${RUNS[*]} (hold ${HOLD}s, window ${WINDOW}s, ramp ${RAMP}/s); machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" >&2
for r in "${RUNS[@]}"; do
  case "$r" in
    signal:*) run_signalling "${r##*:}" ;;
    floor:*) run_floor "${r##*:}" ;;
    *) run_one "${r%%:*}" "${r##*:}" ;;
  esac
done
