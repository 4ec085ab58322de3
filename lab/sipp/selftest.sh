#!/bin/bash
# Self-test of the far ends WITHOUT sipline: starts a lab Kamailio on
# 127.0.0.1:BASE and pairs every lab/sipp scenario with a matching sipp or
# baresip peer through it, checking exit codes, the SIP flow and recorded audio.
# Stops everything it started (by pid) on exit. Prints PASS/FAIL lines and
# "N passed, M failed"; exit 0 if all passed. Takes ~40 s.
#
#   lab/sipp/selftest.sh [OUT_DIR] [BASE]     defaults: a new mktemp dir, 17000
#
# Ports used: BASE (PBX), BASE+10 / +100..+102 (sipp UAS: SIP / RTP+ctrl),
# BASE+20 / +110..+112 (sipp UAC), BASE+200..+201 and BASE+300..+319 (baresip
# 1002), BASE+220..+221, +230 (ctrl) and BASE+320..+339 (baresip 1003).
# LAB_PBX_SH=path/to/kamailio.sh runs another PBX script (e.g. a patched copy).
set -uo pipefail
LAB="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$(mktemp -d /tmp/sipline-farend.XXXXXX)}"; B="${2:-17000}"
mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
S="$LAB/sipp/run.sh"; P="$LAB/phones/phone.sh"; C="$LAB/phones/ctrl.py"
PASS=0; FAIL=0; PIDS=()
ok()  { echo "PASS $*"; PASS=$((PASS+1)); }
bad() { echo "FAIL $*"; FAIL=$((FAIL+1)); }
cleanup() {
  "$P" stop "$OUT/ph1002" 2>/dev/null; "$P" stop "$OUT/ph1003" 2>/dev/null
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  wait 2>/dev/null
}
trap cleanup EXIT
# the SIP flow of one sipp instance: first lines, e.g. "INVITE 100 180 200 ACK BYE 200"
flow() { cut -f7 "$1" 2>/dev/null | awk '{ if ($1 == "SIP/2.0") printf "%s ", $2; else printf "%s ", $1 }'; }

echo "out: $OUT   PBX 127.0.0.1:$B"
"${LAB_PBX_SH:-$LAB/pbx/kamailio.sh}" "$OUT/pbx" "$B" >"$OUT/kamailio.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do ss -lun | grep -q "127.0.0.1:$B " && break; sleep 0.05; done
sleep 0.3

# pair NAME UAS_SCENARIO "UAS ARGS" UAC_SCENARIO "UAC ARGS" EXPECTED_UAS_FLOW EXPECTED_UAC_FLOW [EXPECTED_RC]
pair() {
  local n="$1" us="$2" ua="$3" cs="$4" ca="$5" euf="$6" ecf="$7" erc="${8:-0}" d="$OUT/$1" t0 urc crc uf cf
  mkdir -p "$d"
  "$S" register "$d" "$B" $((B+10)) $((B+100)) -s 1001 -ap secret || { bad "$n: register"; return; }
  t0=$EPOCHREALTIME
  "$S" "$us" "$d" "$B" $((B+10)) $((B+100)) -s 1001 $ua & local u=$!
  for _ in $(seq 1 100); do ss -lun | grep -q "127.0.0.1:$((B+10)) " && break; sleep 0.01; done
  "$S" "$cs" "$d" "$B" $((B+20)) $((B+110)) -s 1001 -key caller 1000 -au 1000 -ap secret $ca; crc=$?
  wait $u; urc=$?
  uf="$(flow "$d/$us-$((B+10)).short.csv")"; cf="$(flow "$d/$cs-$((B+20)).short.csv")"
  local secs; secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')
  if [ "$urc" = "$erc" ] && [ "$crc" = "$erc" ] && [ "$uf" = "$euf" ] && [ "$cf" = "$ecf" ]; then
    ok "$n (${secs}s, rc $erc): UAS[$uf] UAC[$cf]"
  else
    bad "$n (${secs}s): UAS rc=$urc [$uf] want [$euf]; UAC rc=$crc [$cf] want [$ecf]; see $d"
  fi
}
AUTH="INVITE 407 ACK INVITE 100"
pair answer_then_bye   uas_answer_then_bye "-d 1000" uac_call_wait_bye "" \
  "INVITE 100 180 200 ACK BYE 200 " "$AUTH 180 200 ACK BYE 200 "
pair answer_wait_bye   uas_answer_wait_bye "" uac_call_then_bye "-d 1000" \
  "INVITE 100 180 200 ACK BYE 200 " "$AUTH 180 200 ACK BYE 200 "
pair busy              uas_busy "-d 300" uac_call_expect_reject "" \
  "INVITE 100 180 486 ACK " "$AUTH 180 486 ACK "
pair decline           uas_decline "" uac_call_expect_reject "" \
  "INVITE 100 180 603 ACK " "$AUTH 180 603 ACK "
pair ring_cancel       uas_ring_until_cancel "" uac_cancel "-d 1000" \
  "INVITE 100 180 CANCEL 200 487 ACK " "$AUTH 180 CANCEL 200 487 ACK "
pair early_media       uas_early_media "-d 1000" uac_call_then_bye "-d 500" \
  "INVITE 100 180 183 200 ACK BYE 200 " "$AUTH 180 183 200 ACK BYE 200 "
# both sides wait for a BYE after the re-INVITE, so both end on -timeout (rc 255
# with -timeout_error); uas_reinvite with a caller that hangs up: baresip, below
pair reinvite          uas_reinvite "-d 500 -timeout 3s" uac_call_wait_bye "-timeout 3s" \
  "INVITE 100 180 200 ACK INVITE 100 200 ACK " "$AUTH 180 200 ACK INVITE 200 ACK " 255

d="$OUT/unregister"; mkdir -p "$d"
if "$S" unregister "$d" "$B" $((B+10)) $((B+100)) -s 1001 -ap secret; then ok "unregister 1001"; else bad "unregister"; fi

# --- baresip phones ---------------------------------------------------------
audio_ok() { # recording, expected Hz
  local st rms f
  [ -s "$1" ] || return 1
  st=$(sox "$1" -n trim 0.2 stat 2>&1)
  rms=$(awk '/^RMS +amplitude/{print $3}' <<<"$st"); f=$(awk '/^Rough +frequency/{print $3}' <<<"$st")
  echo "rms=$rms ~${f}Hz"
  awk -v r="$rms" -v f="$f" -v e="$2" 'BEGIN{exit !(r>0.1 && f>0.9*e && f<1.1*e)}'
}
if pid=$("$P" start "$OUT/ph1002" 1002 secret $((B+200)) "$B" $((B+300))-$((B+319)) auto 0 udp); then
  ok "baresip 1002 (auto) registered, pid $pid"
else bad "baresip 1002 start"; fi
if pid=$("$P" start "$OUT/ph1003" 1003 secret $((B+220)) "$B" $((B+320))-$((B+339)) manual $((B+230)) udp); then
  ok "baresip 1003 (manual, ctrl $((B+230))) registered, pid $pid"
else bad "baresip 1003 start"; fi

d="$OUT/call_auto"; mkdir -p "$d"
"$S" uac_call_then_bye "$d" "$B" $((B+20)) $((B+110)) -s 1002 -key caller 1000 -au 1000 -ap secret -d 2000; rc=$?
sleep 0.3
if [ $rc = 0 ] && a=$(audio_ok "$("$P" last "$OUT/ph1002")" 1000); then
  ok "sipp -> baresip 1002 answered; its recording is its own tone echoed by sipp ($a)"
else bad "sipp -> baresip 1002: rc=$rc audio ${a:-none}"; fi

d="$OUT/call_manual_cancel"; mkdir -p "$d"
"$S" uac_cancel "$d" "$B" $((B+20)) $((B+110)) -s 1003 -key caller 1000 -au 1000 -ap secret -d 1000; rc=$?
[ $rc = 0 ] && ok "sipp -> baresip 1003 (manual) rings until CANCEL: [$(flow "$d/uac_cancel-$((B+20)).short.csv")]" \
            || bad "manual ring + CANCEL rc=$rc"

d="$OUT/call_manual_accept"; mkdir -p "$d"
"$S" uac_call_wait_bye "$d" "$B" $((B+20)) $((B+110)) -s 1003 -key caller 1000 -au 1000 -ap secret & u=$!
"$P" wait "$OUT/ph1003" 'Incoming call from:.*sip:1000@' 5 && sleep 0.2 && "$C" $((B+230)) accept >/dev/null \
  && "$P" wait "$OUT/ph1003" established 5 && sleep 1 && "$C" $((B+230)) hangup >/dev/null
wait $u; rc=$?
[ $rc = 0 ] && ok "baresip 1003: ctrl accept, then ctrl hangup -> BYE: [$(flow "$d/uac_call_wait_bye-$((B+20)).short.csv")]" \
            || bad "manual accept/hangup rc=$rc"

d="$OUT/call_manual_reject"; mkdir -p "$d"
"$S" uac_call_expect_reject "$d" "$B" $((B+20)) $((B+110)) -s 1003 -key caller 1000 -au 1000 -ap secret & u=$!
sleep 0.5; "$C" $((B+230)) hangup >/dev/null
wait $u; rc=$?
[ $rc = 0 ] && ok "baresip 1003: ctrl hangup while ringing rejects: [$(flow "$d/uac_call_expect_reject-$((B+20)).short.csv")]" \
            || bad "manual reject rc=$rc"

# baresip 1002 as the caller of sipp UAS scenarios (caller.sh quits after 3 s)
"$P" stop "$OUT/ph1002"
for sc in "uas_reinvite -d 1000" "uas_answer_then_bye -d 1500" "uas_early_media -d 1000"; do
  set -- $sc; n="$1"; shift; d="$OUT/bs_$n"; mkdir -p "$d"
  "$S" register "$d" "$B" $((B+10)) $((B+100)) -s 1001 -ap secret
  "$S" "$n" "$d" "$B" $((B+10)) $((B+100)) -s 1001 "$@" & u=$!
  sleep 0.1
  "$LAB/phones/caller.sh" "$d/phone" 1002 secret $((B+200)) "$B" $((B+300))-$((B+319)) 1001 3; crc=$?
  wait $u; urc=$?
  if [ $crc = 0 ] && [ $urc = 0 ] && a=$(audio_ok "$("$P" last "$d/phone")" 1000); then
    ok "baresip caller -> $n: [$(flow "$d/$n-$((B+10)).short.csv")] caller heard its echo ($a)"
  else bad "baresip caller -> $n: caller rc=$crc uas rc=$urc audio ${a:-none}, see $d"; fi
done

echo "$PASS passed, $FAIL failed   (logs: $OUT)"
[ $FAIL = 0 ]
