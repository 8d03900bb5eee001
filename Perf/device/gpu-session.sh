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
