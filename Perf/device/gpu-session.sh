#!/usr/bin/env bash
# The prepared GPU session: correctness first, then the benchmark problems of docs/BENCHMARKS.md with
# their FlexAttention/SDPA anchors from the same run. Written for a session that has a lent GPU:
#
#   here (the dev machine):  ../shared/device/pack.sh Perf/NATTEN.Cli/NATTEN.Cli.csproj
#   device tool:             run  command="bash Perf/device/gpu-session.sh"  carry=[".device"]
#
# Everything lands under $OUT (the device tool brings it back). Each step is bounded by `timeout`, so
# a hang costs one step, not the session. Nothing here has run yet: it was written in a session
# without a GPU (see the issue notes); expect to fix small things on first use.
set -u
OUT="${OUT:-out}"
mkdir -p "$OUT"
R=".device/run.sh"
natten() { timeout "${STEP_TIMEOUT:-240}" bash "$R" "$@"; }
anchor() { timeout "${STEP_TIMEOUT:-240}" bash "$R" --anchor "$@"; }

# 1. Correctness on the GPU: every backend and storage type against the double Reference.
natten selftest --count 12 > "$OUT/selftest.txt" 2>&1; tail -n 1 "$OUT/selftest.txt"

# 2. Independent check against torch (float64): id | spatial | kernel | stride | dilation | causal | heads | kv heads | dim | dtype
problems=(
  "A|128x128|17|1|1|0|16|16|64|fp16"
  "A32|128x128|17|1|1|0|16|16|64|fp32"
  "Ccd|4096|255|1|2|1|8|8|128|fp16"
  "Ds|256x256|80|16|1|0|24|24|128|bf16"
  "E|56x56|7|1|1|0|4|4|32|fp16"
  "G|16x48x48|7x15x15|1|1|0|16|16|128|bf16"
  "gqa|64x64|9|1|2|0x1|8|2|64|fp16"
)
for p in "${problems[@]}"; do
  IFS='|' read -r id shape kernel stride dil causal heads kv dim dtype <<< "$p"
  dir="$OUT/check-$id"; mkdir -p "$dir"
  round=$([ "$dtype" = fp32 ] && echo fp32 || echo "$dtype")
  natten gen --shape "$shape" --heads "$heads" --kv-heads "$kv" --dim "$dim" --round "$round" --seed 7 --out "$dir" > /dev/null
  natten run --query "$dir/q.npy" --key "$dir/k.npy" --value "$dir/v.npy" --output "$dir/o.npy" --lse "$dir/lse.npy" \
    --kernel-size "$kernel" --stride "$stride" --dilation "$dil" --causal "$causal" --backend fused --dtype "$dtype" 2> "$dir/run.err"
  anchor --shape "$shape" --kernel "$kernel" --stride "$stride" --dilation "$dil" --causal "$causal" --heads "$heads" \
    --heads-kv "$kv" --dim "$dim" --dtype "$dtype" --check "$dir" --check-only > "$dir/check.jsonl" 2>&1
  rm -f "$dir"/*.npy
  echo "check $id: $(tail -n 1 "$dir/check.jsonl")"
done

# 3. Speed, each problem with its anchor measured in the same session.
speed=(
  "A|128x128|17|1|16|64|fp16"
  "A32|128x128|17|1|16|64|fp32"
  "C|32768|2048|1|16|128|fp16"
  "Cs|32768|2048|256|16|128|fp16"
  "D|256x256|80|1|24|128|bf16"
  "Ds|256x256|80|16|24|128|bf16"
  "E|56x56|7|1|4|32|fp16"
  "G|16x48x48|7x15x15|1|16|128|bf16"
)
for p in "${speed[@]}"; do
  IFS='|' read -r id shape kernel stride heads dim dtype <<< "$p"
  batch=$([ "$id" = E ] && echo 64 || echo 1)
  natten profile --shape "$shape" --kernel-size "$kernel" --stride "$stride" --batch "$batch" --heads "$heads" --dim "$dim" \
    --dtype "$dtype" --backend fused,naive --warmup 2 --repeat 10 --json > "$OUT/profile-$id.jsonl" 2>&1
  anchor --shape "$shape" --kernel "$kernel" --stride "$stride" --batch "$batch" --heads "$heads" --dim "$dim" --dtype "$dtype" \
    > "$OUT/anchor-$id.jsonl" 2>&1
  echo "speed $id done"
done

# 4. Block-sparse: each pattern through gen -> natten run (fused, fp16, exporting the pattern's dense
#    allowed-pair mask) -> Perf/device/blocksparse_anchor.py (float64 check of our o/lse with the
#    FlashAttention-style pass/fail, then FlexAttention with a block mask built from that mask, SDPA
#    with the boolean mask and dense SDPA), and natten profile --pattern (fused vs naive, and fused with
#    every block listed) on the same GPU. Written without a GPU: never run yet.
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
for p in "${blocksparse[@]}"; do
  IFS='|' read -r id shape pattern block <<< "$p"
  dir="$OUT/$id"; mkdir -p "$dir"
  if [ "${pattern%%:*}" = segments ]; then
    # documents of 700, 1300, 96 padding (-1), 1500 and 500 tokens
    python3 -c "import numpy as np; np.save('$dir/seg.npy', np.array([0]*700+[1]*1300+[-1]*96+[2]*1500+[3]*500, dtype=np.int32))"
    pattern="segments:$dir/seg.npy"
  fi
  natten gen --shape "$shape" --heads "$BS_HEADS" --dim "$BS_DIM" --round fp16 --seed 7 --out "$dir" > /dev/null
  natten run --query "$dir/q.npy" --key "$dir/k.npy" --value "$dir/v.npy" --output "$dir/o.npy" --lse "$dir/lse.npy" \
    --pattern "$pattern" --block-size "$block" --backend fused --dtype fp16 --export-mask "$dir/mask.npy" 2> "$dir/run.err"
  timeout "${STEP_TIMEOUT:-240}" python3 Perf/device/blocksparse_anchor.py --mask "$dir/mask.npy" --dtype fp16 --check "$dir" \
    > "$dir/anchor.jsonl" 2>&1
  natten profile --pattern "$pattern" --shape "$shape" --heads "$BS_HEADS" --dim "$BS_DIM" --block-size "$block" --dtype fp16 \
    --backend fused,naive --warmup 2 --repeat 10 --json > "$OUT/profile-$id.jsonl" 2>&1
  rm -f "$dir"/*.npy
  echo "block-sparse $id: $(tail -n 1 "$dir/anchor.jsonl" | cut -c1-400)"
done
