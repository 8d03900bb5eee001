#!/usr/bin/env python3
"""Block-sparse anchor: FlexAttention / SDPA timings and a float64 check for any NATTEN.Net pattern.

The pattern comes as a dense boolean allowed-pair mask written by NATTEN.Net itself
(`natten run --pattern P ... --export-mask M.npy`): [H', Nq, Nk] or [B', H', Nq, Nk], bool/uint8,
H' in {1, H}, B' in {1, B}. Inputs are NATTEN layout .npy files in a folder, as for anchor.py's --check:
q [B, X.., H, D], k [B, Y.., Hkv, D], v [B, Y.., Hkv, Dv], our output o [B, X.., H, Dv] and
optionally lse [B, X.., H] (natural log; -inf for a query with no allowed key, whose o is 0).

Modes (one JSON object per line; the last line is the summary):
  --check DIR        compare DIR's o (and lse) against float64 masked attention on the GPU (torch)
  (timings)          on --dir DIR's (default: --check's) q/k/v: FlexAttention (torch.compile'd, block mask from a mask_mod that indexes the
                     mask tensor), dense SDPA with the boolean mask, and dense SDPA without a mask
                     (the dense bound); useful TFLOP/s count allowed pairs only: 2*(D+Dv) per pair
  --selfcheck-numpy DIR  no torch: the same check with a numpy float64 reference on the CPU
--check-only skips the timings. Pass/fail is FlashAttention's rule, as in the NATTEN.Net tests:
err(ours) <= 2 * err(plain) + floor, errors against float64, where "plain" is the straightforward
masked attention in the inputs' precision (float32 for fp32 inputs, float16 for fp16).
Exit code 1 when a check fails. Written without a GPU: never run under torch yet.
"""
import argparse, json, math, os, sys

FLOORS = {"fp32": 1e-6, "fp16": 5e-4, "bf16": 4e-3}


def load_inputs(d):
    import numpy as np
    def ld(stem, required=True):
        path = os.path.join(d, stem + ".npy")
        if not os.path.exists(path):
            if required:
                sys.exit(f"blocksparse_anchor: {path} is missing")
            return None
        return np.load(path)
    q, k, v = ld("q"), ld("k"), ld("v")
    o, lse = ld("o", required=False), ld("lse", required=False)
    if q.ndim < 4 or k.ndim < 4 or v.ndim != k.ndim:
        sys.exit("blocksparse_anchor: q/k/v must be [B, tokens.., heads, dim]")
    return q, k, v, o, lse


def flat(x, heads_axis_last=True):
    """[B, X.., H, C] -> [B, H, N, C] (tokens flattened row-major)."""
    b, h, c = x.shape[0], x.shape[-2], x.shape[-1]
    n = int(math.prod(x.shape[1:-2]))
    return x.reshape(b, n, h, c).transpose(0, 2, 1, 3)


def load_mask(path, B, H, Nq, Nk):
    import numpy as np
    m = np.load(path)
    if m.ndim == 3:
        m = m[None]
    if m.ndim != 4 or m.shape[2:] != (Nq, Nk) or m.shape[0] not in (1, B) or m.shape[1] not in (1, H):
        sys.exit(f"blocksparse_anchor: mask shape {m.shape} does not fit B={B} H={H} Nq={Nq} Nk={Nk}")
    if m.dtype != np.bool_:
        if not np.isin(m, (0, 1)).all():
            sys.exit("blocksparse_anchor: the mask holds values other than 0 and 1")
        m = m.astype(bool)
    return m


def dtype_of(q):
    return "fp16" if str(q.dtype) == "float16" else "fp32"


def numpy_attention(q, k, v, m, scale, dt):
    """Masked attention per (b, h) in dtype dt (float64 for the reference). Returns o [B,H,Nq,Dv], lse [B,H,Nq]."""
    import numpy as np
    B, H, Nq, _ = q.shape
    Hkv, Dv = k.shape[1], v.shape[-1]
    o = np.zeros((B, H, Nq, Dv), dtype=dt)
    lse = np.full((B, H, Nq), -np.inf, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for b in range(B):
            for h in range(H):
                hk = h // (H // Hkv)
                allowed = m[b if m.shape[0] > 1 else 0, h if m.shape[1] > 1 else 0]
                s = (q[b, h].astype(dt) @ k[b, hk].astype(dt).T) * dt(scale)
                s = np.where(allowed, s, dt(-np.inf))
                mx = s.max(axis=1, keepdims=True)
                live = np.isfinite(mx[:, 0])
                mx = np.where(np.isfinite(mx), mx, dt(0))
                p = np.exp(s - mx)
                total = p.sum(axis=1, keepdims=True)
                p = np.where(total > 0, p / np.where(total > 0, total, dt(1)), dt(0))
                o[b, h] = p @ v[b, hk].astype(dt)
                lse[b, h] = np.where(live, (mx[:, 0] + np.log(np.where(live, total[:, 0], 1))).astype(np.float64), -np.inf)
    return o, lse


def compare(ours, ref, plain, floor, what):
    """Max abs errors on entries finite in the reference; -inf entries (empty rows' LSE) must match exactly."""
    import numpy as np
    ours, ref, plain = (np.asarray(x, dtype=np.float64) for x in (ours, ref, plain))
    finite = np.isfinite(ref)
    mismatched = int((~finite & (ours != ref)).sum())
    if finite.any():
        err = float(np.abs(ours[finite] - ref[finite]).max())
        perr = float(np.abs(plain[finite] - ref[finite]).max())
    else:
        err = perr = 0.0
    bound = 2 * perr + floor
    ok = bool(err <= bound and mismatched == 0 and not np.isnan(ours[finite]).any())
    return {f"{what}_max_abs_err": err, f"{what}_plain_max_abs_err": perr, f"{what}_bound": bound,
            f"{what}_nonfinite_mismatches": mismatched, f"{what}_pass": ok}


def selfcheck_numpy(a):
    import numpy as np
    q, k, v, o, lse = load_inputs(a.dir)
    if o is None:
        sys.exit("blocksparse_anchor: --selfcheck-numpy needs o.npy in DIR")
    dt = a.dtype or dtype_of(q)
    qf, kf, vf = flat(q), flat(k), flat(v)
    B, H, Nq, D = qf.shape
    m = load_mask(a.mask, B, H, Nq, kf.shape[2])
    scale = a.scale or 1 / math.sqrt(D)
    ref_o, ref_lse = numpy_attention(qf, kf, vf, m, scale, np.float64)
    plain_o, plain_lse = numpy_attention(qf, kf, vf, m, scale, np.float16 if dt == "fp16" else np.float32)
    res = {"mode": "selfcheck-numpy", "B": B, "H": H, "Hkv": kf.shape[1], "Nq": Nq, "Nk": kf.shape[2], "D": D,
           "Dv": vf.shape[-1], "dtype": dt, "allowed_pairs": allowed_pairs(m, B, H)}
    res.update(compare(flat(o), ref_o, plain_o, FLOORS[dt], "o"))
    if lse is not None:
        res.update(compare(lse.reshape(B, Nq, H).transpose(0, 2, 1), ref_lse, plain_lse, FLOORS["fp32"], "lse"))
    res["pass"] = all(v for key, v in res.items() if key.endswith("_pass"))
    print(json.dumps(res), flush=True)
    return 0 if res["pass"] else 1


def allowed_pairs(m, B, H):
    """Allowed (query, key) pairs summed over every (batch, head) of the problem (the mask broadcasts)."""
    per_plane = m.reshape(m.shape[0], m.shape[1], -1).sum(axis=2)
    return int(per_plane.sum()) * (B // m.shape[0]) * (H // m.shape[1])


def gpu(a):
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch.nn.attention.flex_attention import flex_attention, create_block_mask
    q, k, v, o, lse = load_inputs(a.check or a.dir)
    dt = a.dtype or dtype_of(q)
    qf, kf, vf = flat(q), flat(k), flat(v)
    B, H, Nq, D = qf.shape
    Hkv, Nk, Dv = kf.shape[1], kf.shape[2], vf.shape[-1]
    m_np = load_mask(a.mask, B, H, Nq, Nk)
    scale = a.scale or 1 / math.sqrt(D)
    dev = "cuda"
    tdt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dt]
    pairs = allowed_pairs(m_np, B, H)
    useful = 2.0 * (D + Dv) * pairs
    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "B": B, "H": H, "Hkv": Hkv, "Nq": Nq, "Nk": Nk,
           "D": D, "Dv": Dv, "dtype": dt, "mask_shape": list(m_np.shape), "allowed_pairs": pairs,
           "pair_density": pairs / (B * H * Nq * Nk), "useful_gflop": useful / 1e9}
    m = torch.from_numpy(m_np).to(dev)
    t = lambda x: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dev)
    q64, k64, v64 = (t(x).double() for x in (qf, kf, vf))
    if Hkv != H:
        k64, v64 = k64.repeat_interleave(H // Hkv, 1), v64.repeat_interleave(H // Hkv, 1)
    ok = True
    if a.check:
        if o is None:
            sys.exit("blocksparse_anchor: --check needs o.npy in DIR")
        def masked(qx, kx, vx):
            s = (qx @ kx.transpose(-1, -2)) * scale
            s = s.masked_fill(~m, float("-inf"))
            l = torch.logsumexp(s, -1)
            p = torch.exp(s - l.unsqueeze(-1).masked_fill(~torch.isfinite(l).unsqueeze(-1), 0))
            p = p.masked_fill(~m, 0)
            return p @ vx, l
        ref_o, ref_lse = masked(q64, k64, v64)
        plain_o, plain_lse = masked(q64.to(tdt), k64.to(tdt), v64.to(tdt))
        res.update(compare(flat(o), ref_o.cpu().numpy(), plain_o.float().cpu().numpy(), FLOORS[dt], "o"))
        if lse is not None:
            res.update(compare(lse.reshape(B, Nq, H).transpose(0, 2, 1), ref_lse.cpu().numpy(), plain_lse.float().cpu().numpy(), FLOORS["fp32"], "lse"))
        ok = all(v for key, v in res.items() if key.endswith("_pass"))
        res["pass"] = ok
        print(json.dumps({key: v for key, v in res.items() if "err" in key or key.endswith("pass")}), flush=True)
        del ref_o, plain_o
        if a.check_only:
            print(json.dumps(res), flush=True)
            return 0 if ok else 1
    qx, kx, vx = (t(x).to(tdt) for x in (qf, kf, vf))
    Bm, Hm = m.shape[0], m.shape[1]
    def mask_mod(b, h, q_idx, kv_idx):
        return m[b if Bm > 1 else 0, h if Hm > 1 else 0, q_idx, kv_idx]
    bm = create_block_mask(mask_mod, Bm if Bm > 1 else None, Hm if Hm > 1 else None, Nq, Nk, device=dev,
                           BLOCK_SIZE=a.flex_block)
    fa = torch.compile(flex_attention)
    gqa = Hkv != H
    def bench(fn):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(a.reps):
            fn()
        e.record(); torch.cuda.synchronize()
        return s.elapsed_time(e) / a.reps
    res["flex_block_size"] = a.flex_block
    res["flex_ms"] = bench(lambda: fa(qx, kx, vx, block_mask=bm, scale=scale, enable_gqa=gqa))
    res["flex_useful_tflops"] = useful / res["flex_ms"] / 1e9
    if not a.no_dense:
        res["sdpa_masked_ms"] = bench(lambda: F.scaled_dot_product_attention(qx, kx, vx, attn_mask=m, scale=scale, enable_gqa=gqa))
        res["sdpa_masked_useful_tflops"] = useful / res["sdpa_masked_ms"] / 1e9
        res["sdpa_dense_ms"] = bench(lambda: F.scaled_dot_product_attention(qx, kx, vx, scale=scale, enable_gqa=gqa))
        res["sdpa_dense_tflops_dense_count"] = 2.0 * (D + Dv) * B * H * Nq * Nk / res["sdpa_dense_ms"] / 1e9
    print(json.dumps(res), flush=True)
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mask", required=True, help="dense allowed-pair mask .npy from natten run --export-mask")
    ap.add_argument("--dir", default="", help="folder with q.npy, k.npy, v.npy for the timings (default: the --check folder)")
    ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], help="storage precision natten run used: sets 'plain' and the timings (default: q.npy's dtype; natten gen writes float32 files even with --round fp16, so give it)")
    ap.add_argument("--scale", type=float, default=0.0, help="score scale (default 1/sqrt(D))")
    ap.add_argument("--check", metavar="DIR", default="", help="folder with q, k, v, o (and lse): compare o/lse against float64 masked attention (torch, GPU)")
    ap.add_argument("--check-only", action="store_true", help="with --check: skip the timings")
    ap.add_argument("--selfcheck-numpy", metavar="DIR", default="", help="the check of DIR with numpy on the CPU, no torch")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--flex-block", type=int, default=128, help="FlexAttention block size")
    ap.add_argument("--no-dense", action="store_true", help="skip the SDPA timings")
    a = ap.parse_args()
    if a.selfcheck_numpy:
        a.dir = a.selfcheck_numpy
        return selfcheck_numpy(a)
    a.dir = a.dir or a.check
    if not a.dir:
        ap.error("give --check DIR, --dir DIR or --selfcheck-numpy DIR")
    return gpu(a)


if __name__ == "__main__":
    sys.exit(main())
