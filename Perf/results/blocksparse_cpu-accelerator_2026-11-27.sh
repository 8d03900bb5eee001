#!/usr/bin/env bash
# The block-sparse-vs-naive figure on ILGPU's CPU accelerator: every pattern through
# `natten profile --pattern`, fused vs naive vs reference, ROUNDS rounds (JSON lines to $OUT).
# EXTRA adds options to every profile call (e.g. EXTRA="--tiling 16/64" for the fused work split).
# Usage (repo root): dotnet build Perf/NATTEN.Cli -c Release
#                    NATTEN="dotnet Perf/NATTEN.Cli/bin/Release/net10.0/natten.dll" bash Perf/results/blocksparse_cpu-accelerator_2026-11-27.sh OUTDIR
set -euo pipefail
OUT="${1:?usage: $0 OUTDIR}"; ROUNDS="${ROUNDS:-3}"
NATTEN="${NATTEN:-dotnet run --project Perf/NATTEN.Cli -c Release --no-build --}"
mkdir -p "$OUT"
# Segment ids for 1024 tokens: runs of 200, 300, 24 padding (-1), 400, 100 tokens.
python3 - "$OUT/segments.npy" <<'PY'
import struct, sys
ids = [0] * 200 + [1] * 300 + [-1] * 24 + [2] * 400 + [3] * 100
header = "{'descr': '<i4', 'fortran_order': False, 'shape': (%d,), }" % len(ids)
header += " " * (63 - (10 + len(header)) % 64) + "\n"
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + struct.pack("<%di" % len(ids), *ids))
PY
common=(--heads 2 --dim 32 --block-size 64 --warmup 1 --repeat 5 --no-dense --json ${EXTRA:-})
patterns=(
  "sliding|sliding:128,0|1024"
  "causal|causal|1024"
  "strided|strided:1,2|1024"
  "halo|halo:8,4|32x32"
  "segments|segments:$OUT/segments.npy|1024"
  "documents|documents:0,100,356,612,1024|1024"
  "padding|padding:640|1024"
)
for round in $(seq 1 "$ROUNDS"); do
  for p in "${patterns[@]}"; do
    IFS='|' read -r id pattern shape <<< "$p"
    $NATTEN profile --pattern "$pattern" --shape "$shape" "${common[@]}" >> "$OUT/$id.jsonl"
    echo "round $round $id done $(date -u +%H:%M:%S)"
  done
done
# Dense attention on the fused kernel (every block listed), once: the same sizes as above.
$NATTEN profile --pattern sliding:128,0 --shape 1024 --heads 2 --dim 32 --block-size 64 --warmup 1 --repeat 3 --backend fused --json ${EXTRA:-} > "$OUT/fused-dense.jsonl"
echo "dense done $(date -u +%H:%M:%S)"
