#!/usr/bin/env bash
# The prepared GPU session, in phases that fit the device tool's limits (one command ≤ 600 s, about
# 15 device minutes per session in all). From the repo root, after packing on the dev machine:
#
#   here:         ../shared/device/pack.sh Perf/NATTEN.Cli/NATTEN.Cli.csproj
#   device call 1: bash Perf/device/gpu-session.sh selftest ptx check          (carry [".device"])
#   device call 2: bash Perf/device/gpu-session.sh speed
#   device call 3: bash Perf/device/gpu-session.sh blocksparse sanitize         (if time is left)
#   back here:     python3 Perf/device/summarize.py <files_at>/out --device "…" > Perf/results/<ids>_<device>_<date>.md
#
# No phase names = all of them in that order. Every step is bounded: BUDGET_S (default 540) is the
# whole command's budget; a step that would start with less than its estimate left is skipped and
# listed in $OUT/skipped.txt, and each command is killed at min(STEP_TIMEOUT, time left). Results land
# under $OUT (the device tool brings them back); steps.txt has each step's exit code and clock.
# Every file written from .device/run.sh output starts with its nvidia-smi line: read the JSON lines of
# *.jsonl with grep '^{'. Nothing here has run yet: it was written in sessions without a GPU; expect
# small fixes on first use.
set -u
OUT="${OUT:-out}"
mkdir -p "$OUT"
R=".device/run.sh"
START=$SECONDS
BUDGET_S="${BUDGET_S:-540}"
left() { echo $((BUDGET_S - (SECONDS - START))); }
cap() { local l; l=$(( $(left) - 5 )); local s="${STEP_TIMEOUT:-240}"; [ "$l" -lt "$s" ] && s=$l; [ "$s" -lt 1 ] && s=1; echo "$s"; }
natten() { timeout "$(cap)" bash "$R" "$@"; }
anchor() { timeout "$(cap)" bash "$R" --anchor "$@"; }
# step NAME ESTIMATE_S FUNCTION [ARGS...]: runs FUNCTION unless less than ESTIMATE_S seconds are left.
step() {
  local name=$1 est=$2; shift 2
  if [ "$(left)" -lt "$est" ]; then echo "skipped (time): $name" | tee -a "$OUT/skipped.txt"; return 0; fi
  "$@"; local rc=$?
  echo "$name rc=$rc at $((SECONDS - START)) s" | tee -a "$OUT/steps.txt"
}

# --- selftest: every backend and storage type against the double Reference on this GPU ---------------
# Seeds 1-6: every third seed is a D = Dv problem (64 or 128), which takes the generated register-resident kernels.
selftest() { natten selftest --count 6 --seed 1 > "$OUT/selftest.txt" 2>&1; tail -n 1 "$OUT/selftest.txt"; }

# --- ptx: register / spill / shared-memory table of every kernel (ptxas from CUDA or Triton) ----------
ptx() { timeout "$(cap)" bash Perf/device/ptx-report.sh "$OUT" sm_90 > "$OUT/ptx-report.txt" 2>&1; tail -n 3 "$OUT/ptx-report.txt"; }

# --- check: our outputs against torch in float64 (FlashAttention-style rule in anchor.py) -------------
# id | spatial | kernel | stride | dilation | causal | heads | kv heads | dim | dtype   (issue #5 asks ≥ 5, fp16 and bf16)
checks=(
  "A|128x128|17|1|1|0|16|16|64|fp16"
  "G|16x48x48|7x15x15|1|1|0|16|16|128|bf16"
  "Ccd|4096|255|1|2|1|8|8|128|fp16"
  "Ds|256x256|80|16|1|0|24|24|128|bf16"
  "gqa|64x64|9|1|2|0x1|8|2|64|fp16"
  "E|56x56|7|1|1|0|4|4|32|fp16"
  "A32|128x128|17|1|1|0|16|16|64|fp32"
)
check_one() {
  local id shape kernel stride dil causal heads kv dim dtype
  IFS='|' read -r id shape kernel stride dil causal heads kv dim dtype <<< "$1"
  local dir="$OUT/check-$id"; mkdir -p "$dir"
  natten gen --shape "$shape" --heads "$heads" --kv-heads "$kv" --dim "$dim" --round "$dtype" --seed 7 --out "$dir" > /dev/null
  natten run --query "$dir/q.npy" --key "$dir/k.npy" --value "$dir/v.npy" --output "$dir/o.npy" --lse "$dir/lse.npy" \
    --kernel-size "$kernel" --stride "$stride" --dilation "$dil" --causal "$causal" --backend fused --dtype "$dtype" 2> "$dir/run.err"
  anchor --shape "$shape" --kernel "$kernel" --stride "$stride" --dilation "$dil" --causal "$causal" --heads "$heads" \
    --heads-kv "$kv" --dim "$dim" --dtype "$dtype" --check "$dir" --check-only > "$dir/check.jsonl" 2>&1
  rm -f "$dir"/*.npy
  echo "check $id: $(tail -n 1 "$dir/check.jsonl" | cut -c1-300)"
}
check() { for p in "${checks[@]}"; do step "check ${p%%|*}" 45 check_one "$p"; done; }

# --- speed: benchmark problems (docs/BENCHMARKS.md), each next to its anchor from the same session -----
# id | spatial | kernel | stride | heads | dim | dtype | backends | extra profile flags
speeds=(
  "A|128x128|17|1|16|64|fp16|fused,naive|--backward"
  "D|256x256|80|1|24|128|bf16|fused|--no-dense"
  "C|32768|2048|1|16|128|fp16|fused|--no-dense"
  "G|16x48x48|7x15x15|1|16|128|bf16|fused|--no-dense"
  "Ds|256x256|80|16|24|128|bf16|fused|--no-dense"
  "C1|4096|127|1|16|128|fp16|fused,naive|"
  "A32|128x128|17|1|16|64|fp32|fused,naive|"
  "A32t|128x128|17|1|16|64|fp32|fused|--tf32"
  "Cs|32768|2048|256|16|128|fp16|fused|--no-dense"
  "E|56x56|7|1|4|32|fp16|fused,naive|"
)
speed_one() {
  local id shape kernel stride heads dim dtype backends extra
  IFS='|' read -r id shape kernel stride heads dim dtype backends extra <<< "$1"
  local batch=1; [ "$id" = E ] && batch=64
  # shellcheck disable=SC2086
  natten profile --shape "$shape" --kernel-size "$kernel" --stride "$stride" --heads "$heads" --dim "$dim" --dtype "$dtype" \
    --backend "$backends" --warmup 2 --repeat 10 --json $extra --batch "$batch" > "$OUT/profile-$id.jsonl" 2>&1
  local adtype=$dtype; [ "$id" = A32t ] && return 0
  anchor --shape "$shape" --kernel "$kernel" --stride "$stride" --batch "$batch" --heads "$heads" --dim "$dim" --dtype "$adtype" \
    > "$OUT/anchor-$id.jsonl" 2>&1
  echo "speed $id: ours $(grep -o '"ms_median":[0-9.e+-]*' "$OUT/profile-$id.jsonl" | head -n 1); anchor $(tail -n 1 "$OUT/anchor-$id.jsonl" | cut -c1-200)"
}
# The same fused forward with element loads instead of ldmatrix (NATTEN_FRAGMENT_LOADS=elements): does ldmatrix pay?
# Written as profile-<id>-elements.jsonl; summarize.py puts it next to <id> with <id>'s anchor.
speed_elements_one() {
  local id shape kernel stride heads dim dtype backends extra
  IFS='|' read -r id shape kernel stride heads dim dtype backends extra <<< "$1"
  # shellcheck disable=SC2086
  NATTEN_FRAGMENT_LOADS=elements natten profile --shape "$shape" --kernel-size "$kernel" --stride "$stride" --heads "$heads" \
    --dim "$dim" --dtype "$dtype" --backend fused --warmup 2 --repeat 10 --json --no-dense \
    > "$OUT/profile-$id-elements.jsonl" 2>&1
  echo "speed $id (element loads): $(grep -o '"ms_median":[0-9.e+-]*' "$OUT/profile-$id-elements.jsonl" | head -n 1)"
}
# The same fused forward with the previous synchronous KV staging (NATTEN_KV_STAGING=elements: one buffer, element by element)
# instead of 16-byte cp.async into two buffers: does the asynchronous, double-buffered staging pay?
# Written as profile-<id>-sync-staging.jsonl; summarize.py puts it next to <id> with <id>'s anchor.
speed_sync_staging_one() {
  local id shape kernel stride heads dim dtype backends extra
  IFS='|' read -r id shape kernel stride heads dim dtype backends extra <<< "$1"
  local backward=""; [ "$id" = A ] && backward="--backward"   # the backward's staging too (dQ: K/V, dK/dV: Q/dO)
  # shellcheck disable=SC2086
  NATTEN_KV_STAGING=elements natten profile --shape "$shape" --kernel-size "$kernel" --stride "$stride" --heads "$heads" \
    --dim "$dim" --dtype "$dtype" --backend fused --warmup 2 --repeat 10 --json --no-dense $backward \
    > "$OUT/profile-$id-sync-staging.jsonl" 2>&1
  echo "speed $id (sync staging): $(grep -o '"ms_median":[0-9.e+-]*' "$OUT/profile-$id-sync-staging.jsonl" | head -n 1)"
}
speed() {
  for p in "${speeds[@]}"; do step "speed ${p%%|*}" 60 speed_one "$p"; done
  for p in "${speeds[@]}"; do case "${p%%|*}" in A|D) step "speed ${p%%|*} elements" 40 speed_elements_one "$p";; esac; done
  for p in "${speeds[@]}"; do case "${p%%|*}" in A|D) step "speed ${p%%|*} sync staging" 40 speed_sync_staging_one "$p";; esac; done
}

# --- blocksparse: each pattern: gen -> natten run (fused, fp16, exporting the dense allowed-pair mask)
#     -> blocksparse_anchor.py (float64 check with the FlashAttention-style rule, then FlexAttention with a
#     block mask from that mask, SDPA with the boolean mask, dense SDPA) and natten profile --pattern.
# id | token grid | pattern | block size
blocksparse=(
  "bs-sliding|4096|sliding:256,0|64"
  "bs-causal|4096|causal|64"
  "bs-strided|4096|strided:1,4,2|64"
  "bs-halo|64x64|halo:8,4|64"
  "bs-segments|4096|segments:SEG|64"
  "bs-documents|4096|documents:0,512,1536,2048,3584,4096|64"
  "bs-padding|4096|padding:3000|64"
)
BS_HEADS=8; BS_DIM=64
blocksparse_one() {
  local id shape pattern block
  IFS='|' read -r id shape pattern block <<< "$1"
  local dir="$OUT/$id"; mkdir -p "$dir"
  if [ "${pattern%%:*}" = segments ]; then
    # documents of 700, 1300, 96 padding (-1), 1500 and 500 tokens
    python3 -c "import numpy as np; np.save('$dir/seg.npy', np.array([0]*700+[1]*1300+[-1]*96+[2]*1500+[3]*500, dtype=np.int32))"
    pattern="segments:$dir/seg.npy"
  fi
  natten gen --shape "$shape" --heads "$BS_HEADS" --dim "$BS_DIM" --round fp16 --seed 7 --out "$dir" > /dev/null
  natten run --query "$dir/q.npy" --key "$dir/k.npy" --value "$dir/v.npy" --output "$dir/o.npy" --lse "$dir/lse.npy" \
    --pattern "$pattern" --block-size "$block" --backend fused --dtype fp16 --export-mask "$dir/mask.npy" 2> "$dir/run.err"
  timeout "$(cap)" python3 Perf/device/blocksparse_anchor.py --mask "$dir/mask.npy" --dtype fp16 --check "$dir" \
    > "$dir/anchor.jsonl" 2>&1
  natten profile --pattern "$pattern" --shape "$shape" --heads "$BS_HEADS" --dim "$BS_DIM" --block-size "$block" --dtype fp16 \
    --backend fused,naive --warmup 2 --repeat 10 --json > "$OUT/profile-$id.jsonl" 2>&1
  rm -f "$dir"/*.npy
  echo "block-sparse $id: $(tail -n 1 "$dir/anchor.jsonl" | cut -c1-300)"
}
# The fused block-sparse forward with synchronous staging (NATTEN_KV_STAGING=elements) on two patterns: does cp.async pay?
blocksparse_sync_one() {
  local id shape pattern block
  IFS='|' read -r id shape pattern block <<< "$1"
  NATTEN_KV_STAGING=elements natten profile --pattern "$pattern" --shape "$shape" --heads "$BS_HEADS" --dim "$BS_DIM" \
    --block-size "$block" --dtype fp16 --backend fused --warmup 2 --repeat 10 --json > "$OUT/profile-$id-sync-staging.jsonl" 2>&1
  echo "block-sparse $id (sync staging): $(grep -o '"ms_median":[0-9.e+-]*' "$OUT/profile-$id-sync-staging.jsonl" | head -n 1)"
}
blocksparse() {
  for p in "${blocksparse[@]}"; do step "blocksparse ${p%%|*}" 60 blocksparse_one "$p"; done
  for p in "${blocksparse[@]}"; do case "${p%%|*}" in bs-sliding|bs-causal) step "blocksparse ${p%%|*} sync" 30 blocksparse_sync_one "$p";; esac; done
}

# --- sanitize: compute-sanitizer memcheck on the self-test's tensor-core problems, racecheck on one small one ------
# (issue #5). The tool comes with the CUDA toolkit or the pip wheel nvidia-cuda-sanitizer-api; without it the phase
# says so in sanitize.txt. Seed 3 is a D = Dv = 128 problem, seed 6 a D = Dv = 64 one (generated kernels, fwd + bwd).
find_sanitizer() {
  command -v compute-sanitizer 2>/dev/null && return 0
  ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n 1 | grep . && return 0
  python3 -c "import glob, site; print(next(iter(sorted(p for d in site.getsitepackages() for p in glob.glob(d + '/nvidia/**/compute-sanitizer', recursive=True) if not p.endswith('/'))), ''))" 2>/dev/null | grep .
}
sanitize_one() {
  local tool=$1 name=$2; shift 2
  local cs; cs=$(find_sanitizer) || { echo "compute-sanitizer not found on this machine" | tee "$OUT/sanitize.txt"; return 0; }
  timeout "$(cap)" "$cs" --tool "$tool" --target-processes all bash "$R" "$@" > "$OUT/$name.txt" 2>&1
  echo "$name: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/$name.txt" | tail -n 1)" | tee -a "$OUT/sanitize.txt"
}
sanitize() {
  step "memcheck D128" 120 sanitize_one memcheck memcheck-d128 selftest --count 1 --seed 3 --backend fused --dtype fp16,bf16
  step "memcheck D64" 120 sanitize_one memcheck memcheck-d64 selftest --count 1 --seed 6 --backend fused --dtype fp16
  step "racecheck D64" 120 sanitize_one racecheck racecheck-d64 selftest --count 1 --seed 6 --backend fused --dtype fp16 --no-backward
}

phases=("$@"); [ ${#phases[@]} -eq 0 ] && phases=(selftest ptx check speed blocksparse)
for phase in "${phases[@]}"; do
  case "$phase" in
    selftest) step selftest 90 selftest ;;
    ptx) step ptx 60 ptx ;;
    check) check ;;
    speed) speed ;;
    blocksparse) blocksparse ;;
    sanitize) sanitize ;;
    *) echo "unknown phase '$phase' (selftest ptx check speed blocksparse sanitize)"; exit 2 ;;
  esac
done
echo "done in $((SECONDS - START)) s; skipped: $( [ -f "$OUT/skipped.txt" ] && wc -l < "$OUT/skipped.txt" || echo 0)"
