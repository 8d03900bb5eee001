"""Turns a gpu-session.sh output folder into Markdown tables for Perf/results/.

Usage: python3 Perf/device/summarize.py OUT_DIR [--device "NVIDIA H100 ..."] > Perf/results/<ids>_<device>_<date>.md

Reads (whatever exists): selftest.txt, steps.txt, skipped.txt, ptxas.tsv, check-*/check.jsonl,
profile-*.jsonl and anchor-*.jsonl (speed phase), bs-*/anchor.jsonl and profile-bs-*.jsonl (block-sparse
phase). Lines that are not JSON (run.sh's nvidia-smi line, errors) are skipped. Ratios are computed only
from figures of the same session; targets are those of issue #5 / docs/BENCHMARKS.md.
"""
import glob
import json
import os
import sys

# id -> (what, test(ours_ms, anchor_ms, naive_ms) -> (met: bool | None, text))
TARGETS = {
    "A": "fused >= 8x faster than FlexAttention",
    "D": "fused <= 20 ms (FlexAttention 59 ms, NATTEN Hopper 16.2 ms on H100)",
    "Ds": "faster than D",
    "C": "fused >= 0.8x FlexAttention's throughput",
    "G": "fused >= 6x faster than FlexAttention",
    "C1": "fused >= 16x faster than our naive (1D, half precision)",
    "A32": "(fp32 reference point)",
    "A32t": "TF32 vs fp32 fused",
}


def json_lines(path):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return rows


def fmt(x, digits=3):
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e-2 or abs(x) >= 1e4 else f"{x:.{digits}f}"
    return str(x)


def first(rows, **match):
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def speed_table(out):
    lines = ["| id | backend | pass | dtype | ours ms (median) | useful TFLOP/s | FlexAttention ms | Flex TFLOP/s | dense SDPA ms | ours vs Flex | vs naive | target | met |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ours_by_id = {}
    for path in sorted(glob.glob(os.path.join(out, "profile-*.jsonl"))):
        pid = os.path.basename(path)[len("profile-"):-len(".jsonl")]
        if pid.startswith("bs-"):
            continue
        rows = [r for r in json_lines(path) if not r.get("dense", False) and "backend" in r]
        # profile-<id>-elements.jsonl: the same problem with element loads instead of ldmatrix; profile-<id>-sync-staging.jsonl:
        # with the synchronous element-by-element KV staging instead of cp.async double buffering; <id>'s anchor applies to both.
        base = pid
        for suffix in ("-elements", "-sync-staging"):
            if pid.endswith(suffix):
                base = pid[:-len(suffix)]
        anchor = next((r for r in json_lines(os.path.join(out, f"anchor-{base}.jsonl")) if "flex_ms" in r), None)
        flex_ms = anchor.get("flex_ms") if anchor else None
        for r in rows:
            ms = r.get("ms_median")
            if r.get("backend") == "fused" and r.get("pass") == "forward" and base == pid:
                ours_by_id[pid] = ms
            vs_flex = flex_ms / ms if (flex_ms and ms and r.get("pass") == "forward") else None
            target, met = "", ""
            if r.get("backend") == "fused" and r.get("pass") == "forward" and ms and base == pid:
                target = TARGETS.get(pid, "")
                met = judge(pid, ms, flex_ms, r.get("speedup_vs_naive"), ours_by_id)
            lines.append("| " + " | ".join([
                pid, r.get("backend", "?"), r.get("pass", "?"), str(r.get("dtype", "")), fmt(ms), fmt(r.get("useful_tflops")),
                fmt(flex_ms) if r.get("pass") == "forward" else "—", fmt(anchor.get("flex_useful_tflops")) if anchor and r.get("pass") == "forward" else "—",
                fmt(anchor.get("dense_sdpa_ms")) if anchor and r.get("pass") == "forward" else "—",
                (fmt(vs_flex) + "x") if vs_flex else "—", (fmt(r.get("speedup_vs_naive")) + "x") if r.get("speedup_vs_naive") else "—",
                target, met]) + " |")
            if r.get("skipped_reason"):
                lines.append(f"|  | ↳ skipped: {r['skipped_reason']} | | | | | | | | | | | |")
    return lines


def judge(pid, ms, flex_ms, vs_naive, ours_by_id):
    if pid == "A" and flex_ms:
        return "yes" if flex_ms / ms >= 8 else "no"
    if pid == "D":
        return "yes" if ms <= 20 else "no"
    if pid == "Ds" and "D" in ours_by_id and ours_by_id["D"]:
        return "yes" if ms < ours_by_id["D"] else "no"
    if pid == "C" and flex_ms:
        return "yes" if flex_ms / ms >= 0.8 else "no"
    if pid == "G" and flex_ms:
        return "yes" if flex_ms / ms >= 6 else "no"
    if pid == "C1" and vs_naive:
        return "yes" if vs_naive >= 16 else "no"
    return ""


def check_table(out):
    lines = ["| id | max abs error (output) | max abs error (LSE) | raw |", "|---|---|---|---|"]
    for path in sorted(glob.glob(os.path.join(out, "check-*", "check.jsonl"))):
        pid = os.path.basename(os.path.dirname(path))[len("check-"):]
        rows = [r for r in json_lines(path) if "check" in r]
        r = rows[-1] if rows else None
        raw = ""
        if r is None:
            with open(path, encoding="utf-8", errors="replace") as f:
                raw = " ".join(f.read().split())[-160:].replace("|", "/")
        lines.append(f"| {pid} | {fmt(r.get('check')) if r else '—'} | {fmt(r.get('lse')) if r else '—'} | {raw} |")
    return lines


def blocksparse_table(out):
    lines = ["| id | check | ours fused ms | fused, sync staging ms | ours naive ms | fused/naive | FlexAttention ms | masked SDPA ms | dense SDPA ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for d in sorted(glob.glob(os.path.join(out, "bs-*"))):
        if not os.path.isdir(d):
            continue
        pid = os.path.basename(d)
        anchor = json_lines(os.path.join(d, "anchor.jsonl"))
        check = next((r for r in anchor if "pass" in r and "flex_ms" not in r), None)
        timing = next((r for r in anchor if any("flex" in k for k in r)), None)
        prof = json_lines(os.path.join(out, f"profile-{pid}.jsonl"))
        fused = first(prof, backend="fused", **{"pass": "forward"})
        naive = first(prof, backend="naive", **{"pass": "forward"})
        fms = fused.get("ms_median") if fused else None
        sync = first(json_lines(os.path.join(out, f"profile-{pid}-sync-staging.jsonl")), backend="fused", **{"pass": "forward"})
        sms = sync.get("ms_median") if sync else None
        nms = naive.get("ms_median") if naive else None
        def pick(row, *keys):
            for k in keys:
                if row and k in row:
                    return row[k]
            return None
        lines.append("| " + " | ".join([
            pid, json.dumps(check)[:120].replace("|", "/") if check else "—", fmt(fms), fmt(sms), fmt(nms), (fmt(nms / fms) + "x") if fms and nms else "—",
            fmt(pick(timing, "flex_ms")), fmt(pick(timing, "sdpa_masked_ms", "masked_sdpa_ms")), fmt(pick(timing, "sdpa_dense_ms", "dense_sdpa_ms"))]) + " |")
    return lines


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    out = sys.argv[1]
    device = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "(see nvidia-smi line in the raw files)"
    print(f"# GPU session results ({device})\n")
    print("Produced by `Perf/device/summarize.py` from a `Perf/device/gpu-session.sh` output folder; every ratio is between")
    print("figures of the same session. Ours: `natten profile` medians on device-resident tensors; FlexAttention/SDPA:")
    print("`.device/run.sh --anchor` (CUDA events, mean of its reps).\n")
    st = os.path.join(out, "selftest.txt")
    if os.path.exists(st):
        with open(st, encoding="utf-8", errors="replace") as f:
            tail = [l.strip() for l in f if l.strip()]
        print(f"**selftest:** `{tail[-1] if tail else '(empty)'}`\n")
        # The device self-checks come first (fragment loads, async copy, address spaces): every result line without a seed.
        loads = [l for l in tail if l.split(" ", 1)[0] in ("ok", "FAIL", "skip") and " seed " not in l]
        if loads:
            print("**device self-checks:** " + "; ".join(f"`{l}`" for l in loads) + "\n")
    sz = os.path.join(out, "sanitize.txt")
    if os.path.exists(sz):
        with open(sz, encoding="utf-8", errors="replace") as f:
            print("**compute-sanitizer:** " + "; ".join(f"`{l.strip()}`" for l in f if l.strip()) + "\n")
    for title, table in (("Correctness against torch (float64)", check_table(out)),
                         ("Speed", speed_table(out)),
                         ("Block-sparse", blocksparse_table(out))):
        if len(table) > 2:
            print(f"## {title}\n")
            print("\n".join(table))
            print()
    tsv = os.path.join(out, "ptxas.tsv")
    if os.path.exists(tsv):
        print("## ptxas -v (registers, stack, spills, static shared memory)\n")
        with open(tsv, encoding="utf-8") as f:
            rows = [l.rstrip("\n").split("\t") for l in f if l.strip()]
        print("| " + " | ".join(rows[0]) + " |")
        print("|" + "---|" * len(rows[0]))
        for r in rows[1:]:
            print("| " + " | ".join(r) + " |")
        print()
    sk = os.path.join(out, "skipped.txt")
    if os.path.exists(sk):
        with open(sk, encoding="utf-8") as f:
            print("**Skipped for time:** " + "; ".join(l.strip() for l in f if l.strip()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
