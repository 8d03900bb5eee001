#!/usr/bin/env bash
# Register, spill and shared-memory report for every kernel, on a machine with a CUDA toolchain or
# Triton (the GPU machine has PyTorch, whose Triton ships a ptxas). Usage, from the repo root after
# ../shared/device/pack.sh Perf/NATTEN.Cli/NATTEN.Cli.csproj:
#   bash Perf/device/ptx-report.sh [OUT_DIR] [ARCH]        (defaults: $OUT or out, sm_90)
# Writes OUT_DIR/ptx/*.ptx (natten ptx), OUT_DIR/ptxas.txt (raw ptxas -v) and OUT_DIR/ptxas.tsv
# (kernel, registers, stack frame, spill stores, spill loads, smem). Not yet run on a GPU machine.
set -u
OUT_DIR="${1:-${OUT:-out}}"
ARCH="${2:-sm_90}"
mkdir -p "$OUT_DIR/ptx"
bash .device/run.sh ptx --out "$OUT_DIR/ptx" > "$OUT_DIR/ptx-table.txt" 2>&1 || { echo "natten ptx failed"; tail -n 5 "$OUT_DIR/ptx-table.txt"; exit 1; }

find_ptxas() {
  if command -v ptxas > /dev/null 2>&1; then command -v ptxas; return; fi
  for c in /usr/local/cuda/bin/ptxas /usr/local/cuda-*/bin/ptxas; do [ -x "$c" ] && { echo "$c"; return; }; done
  python3 - <<'PY' 2>/dev/null
import os, glob, importlib.util
for mod, rel in (("triton", "backends/nvidia/bin/ptxas"), ("nvidia", "cuda_nvcc/bin/ptxas")):
    spec = importlib.util.find_spec(mod)
    if spec is None: continue
    for root in (spec.submodule_search_locations or []):
        for c in glob.glob(os.path.join(root, rel)):
            if os.access(c, os.X_OK): print(c); raise SystemExit
PY
}
PTXAS="$(find_ptxas)"
if [ -z "$PTXAS" ]; then echo "no ptxas found (PATH, /usr/local/cuda, triton, nvidia-cuda-nvcc)"; exit 2; fi
echo "ptxas: $PTXAS ($("$PTXAS" --version 2>&1 | tail -n 1))" | tee "$OUT_DIR/ptxas.txt"
for f in "$OUT_DIR"/ptx/*.ptx; do
  echo "== $(basename "$f" .ptx)" >> "$OUT_DIR/ptxas.txt"
  timeout 120 "$PTXAS" -arch="$ARCH" -v "$f" -o /dev/null >> "$OUT_DIR/ptxas.txt" 2>&1 || echo "ptxas failed" >> "$OUT_DIR/ptxas.txt"
done
python3 "$(dirname "$0")/ptxas_summary.py" "$OUT_DIR/ptxas.txt" > "$OUT_DIR/ptxas.tsv"
column -t -s $'\t' "$OUT_DIR/ptxas.tsv" 2>/dev/null || cat "$OUT_DIR/ptxas.tsv"
