#!/bin/bash
# Writes a sine tone as an 8 kHz mono 16-bit WAV (what the phones play into
# calls; baresip's aufile source needs exactly this format). No-op if OUT exists.
#   lab/phones/gen_audio.sh OUT.wav [FREQ_HZ=1000] [SECONDS=120]
# -6 dBFS; sox takes ~0.1 s for 120 s. Check a recording: sox F.wav -n stat
# ("RMS amplitude" ~0.35 and "Rough frequency" ~FREQ for a clean tone).
set -euo pipefail
OUT="${1:?usage: $0 OUT.wav [FREQ_HZ] [SECONDS]}"; F="${2:-1000}"; S="${3:-120}"
[ -s "$OUT" ] && exit 0
mkdir -p "$(dirname "$OUT")"
sox -n -r 8000 -c 1 -b 16 -e signed-integer "$OUT.tmp.wav" synth "$S" sine "$F" vol 0.5
mv "$OUT.tmp.wav" "$OUT"
