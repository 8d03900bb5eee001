using ILGPU;
using ILGPU.Algorithms;
using Natten.Kernels.Common;
using Natten.Kernels.Cuda;

namespace Natten.Kernels.Fused;

/// <summary>
/// Fused neighborhood attention forward on tensor cores (FlashAttention-2 class, sm_80 <c>mma.sync</c>
/// m16n8k16, fp16 or bf16 inputs, f32 accumulation). One group per (query tile, head, batch) as in
/// <see cref="FnaForwardKernel"/>; the tile's 16·W queries are split into W warps of 16 rows. Per KV
/// sub-tile: S = Q·Kᵀ on tensor cores (staged to shared memory in float), the row-wise online
/// softmax with the tile's masking (a lane per row), P rounded to the input format, then
/// O += P·V on tensor cores with O in per-lane accumulators. Where <c>mma.sync</c> is not available
/// (<see cref="ILGPU.Runtime.Cuda.CudaAsm.IsSupported"/> false) the same fragments go through
/// <see cref="TensorCore.Emulate{TFormat}"/>, so the CPU accelerator runs exactly this tiling,
/// masking, softmax and fragment layout.
/// </summary>
/// <remarks>
/// Requirements (checked by <c>FnaTensorCore.Check</c>): D a multiple of 16, Dv a multiple of 8
/// (at most <see cref="MaxValueDim"/>), query tile 16·W (W ≤ 4), KV sub-tile a multiple of 16, query
/// tile × KV sub-tile ≤ <see cref="MaxScores"/>. Dynamic shared memory (16-bit words): Q [tile × D],
/// K [sub-tile × D], V [sub-tile × Dv], P [tile × sub-tile]. Static: the float scores and row statistics.
/// Version 1: O accumulators and per-lane fragments live in a local array (ILGPU does not unroll), so on a
/// GPU they may spill (the PTX declares a 512-byte local array). It runs the head dims the generated
/// register-resident kernels do not cover: <c>FnaTensorCore.Forward</c> sends D = Dv = 64 and 128 to
/// <see cref="Generated.FnaTensorCoreKernelD64"/> / <see cref="Generated.FnaTensorCoreKernelD128"/>. Its staging
/// helpers (<see cref="StageNeighborhood(ProblemParams, FnaTileShape, TileAxis, TileAxis, TileAxis, int, int, int, int, int, ArrayView{ushort}, ArrayView{ushort}, ArrayView{ushort}, int, ArrayView{ushort}, int, int, int)"/>,
/// <c>StageAdditional</c>) are shared with those kernels and the tensor-core backward.
/// </remarks>
internal static class FnaTensorCoreKernel
{
    public const int MaxWarps = 4;
    public const int MaxScores = 64 * 64;
    public const int MaxValueDim = 256;
    private const float Log2E = 1.4426950408889634f;

    public static void Forward<TFormat>(
        ProblemParams p, FnaTileShape tile, ArrayView<ushort> query, ArrayView<ushort> key, ArrayView<ushort> value,
        ArrayView<ushort> additionalKey, ArrayView<ushort> additionalValue, ArrayView<ushort> output, ArrayView<float> lse, int writeLse)
        where TFormat : struct, IHalfFormat
    {
        // Static shared memory: float scores [tile × sub-tile], row statistics, and the mma emulation's scratch.
        var scores = SharedMemory.Allocate<float>(MaxScores);
        var rowMax = SharedMemory.Allocate<float>(16 * MaxWarps);
        var rowSum = SharedMemory.Allocate<float>(16 * MaxWarps);
        var rowScale = SharedMemory.Allocate<float>(16 * MaxWarps);
        var scratchAll = SharedMemory.Allocate<uint>(TensorCore.ScratchWordsPerWarp * MaxWarps);
        var accumulators = LocalMemory.Allocate<float>(MaxValueDim / 2);

        TileAxis.ForGridIndex(p, tile, Grid.IdxX, out var axis0, out var axis1, out var axis2);
        if (axis0.IsEmpty || axis1.IsEmpty || axis2.IsEmpty)
        {
            return;
        }

        var head = Grid.IdxY;
        var batch = Grid.IdxZ;
        var kvHead = p.KvHeadOf(head);
        var tid = Group.IdxX;
        var threads = Group.DimX;
        var warp = tid / 32;
        var lane = tid % 32;
        var g = lane / 4;
        var t = lane % 4;
        var scratch = scratchAll.SubView(warp * TensorCore.ScratchWordsPerWarp, TensorCore.ScratchWordsPerWarp);
        var keysPerTile = tile.KeyTile;
        var shared = SharedMemory.GetDynamic<ushort>();
        var qTile = shared.SubView(0, tile.QueryTile * p.HeadDim);
        var kTile = shared.SubView(tile.QueryTile * p.HeadDim, keysPerTile * p.HeadDim);
        var vTile = shared.SubView((tile.QueryTile + keysPerTile) * p.HeadDim, keysPerTile * p.ValueDim);
        var pTile = shared.SubView(((tile.QueryTile + keysPerTile) * p.HeadDim) + (keysPerTile * p.ValueDim), tile.QueryTile * keysPerTile);

        // Stage Q (unscaled; the scale is applied to S in float) and reset the row statistics.
        for (var e = tid; e < tile.QueryTile * p.HeadDim; e += threads)
        {
            var local = e / p.HeadDim;
            var row = TileAxis.QueryRow(p, tile, axis0, axis1, axis2, local, batch, head);
            qTile[e] = row < 0 ? (ushort)0 : query[(row * p.HeadDim) + (e % p.HeadDim)];
        }

        for (var r = tid; r < tile.QueryTile; r += threads)
        {
            rowMax[r] = float.NegativeInfinity;
            rowSum[r] = 0f;
            rowScale[r] = 1f;
        }

        for (var i = 0; i < p.ValueDim / 2; i++)
        {
            accumulators[i] = 0f;
        }

        var scoreScale = p.Scale * Log2E;

        for (var a0 = axis0.RangeStart; a0 < axis0.RangeEnd; a0 += tile.K0)
        {
            for (var a1 = axis1.RangeStart; a1 < axis1.RangeEnd; a1 += tile.K1)
            {
                for (var a2 = axis2.RangeStart; a2 < axis2.RangeEnd; a2 += tile.K2)
                {
                    Group.Barrier();
                    StageNeighborhood(p, tile, axis0, axis1, axis2, a0, a1, a2, batch, kvHead, key, value, kTile, vTile, tid, threads);
                    Group.Barrier();
                    Scores<TFormat>(p, warp, g, t, keysPerTile, qTile, kTile, scores, scoreScale, scratch);
                    Group.Barrier();
                    var inside = axis0.InsideEveryWindow(a0, tile.K0) && axis1.InsideEveryWindow(a1, tile.K1) && axis2.InsideEveryWindow(a2, tile.K2);
                    if (lane < 16)
                    {
                        var local = (warp * 16) + lane;
                        var q2 = local % tile.Q2;
                        var q1 = local / tile.Q2 % tile.Q1;
                        var q0 = local / tile.Q2 / tile.Q1;
                        var valid = axis0.HasQuery(q0) && axis1.HasQuery(q1) && axis2.HasQuery(q2);
                        if (inside)
                        {
                            SoftmaxRow<TFormat, NoMask>(new NoMask(), valid, local, a0, a1, a2, tile.K1, tile.K2, keysPerTile, scores, pTile, rowMax, rowSum, rowScale);
                        }
                        else
                        {
                            var window = new WindowMask(
                                axis0.WindowStart(q0), axis0.WindowEnd(q0), axis1.WindowStart(q1), axis1.WindowEnd(q1), axis2.WindowStart(q2), axis2.WindowEnd(q2));
                            SoftmaxRow<TFormat, WindowMask>(window, valid, local, a0, a1, a2, tile.K1, tile.K2, keysPerTile, scores, pTile, rowMax, rowSum, rowScale);
                        }
                    }

                    Group.Barrier();
                    WarpProducts.RescaleAndAddProductNN<TFormat>(p.ValueDim, warp, g, t, keysPerTile, pTile, vTile, rowScale, accumulators, scratch);
                }
            }
        }

        for (var m = 0; m < p.AdditionalTokens; m += keysPerTile)
        {
            Group.Barrier();
            StageAdditional(p, keysPerTile, m, batch, kvHead, additionalKey, additionalValue, kTile, vTile, tid, threads);
            Group.Barrier();
            Scores<TFormat>(p, warp, g, t, keysPerTile, qTile, kTile, scores, scoreScale, scratch);
            Group.Barrier();
            if (lane < 16)
            {
                var local = (warp * 16) + lane;
                var valid = axis0.HasQuery(local / tile.Q2 / tile.Q1) && axis1.HasQuery(local / tile.Q2 % tile.Q1) && axis2.HasQuery(local % tile.Q2);
                SoftmaxRow<TFormat, PrefixMask>(
                    new PrefixMask(p.AdditionalTokens - m), valid, local, 0, 0, 0, 1, keysPerTile, keysPerTile, scores, pTile, rowMax, rowSum, rowScale);
            }

            Group.Barrier();
            WarpProducts.RescaleAndAddProductNN<TFormat>(p.ValueDim, warp, g, t, keysPerTile, pTile, vTile, rowScale, accumulators, scratch);
        }

        // Normalise and store: lane (g, t) holds rows g and g + 8 of its warp, columns 2t, 2t+1 of every 8-column tile.
        Group.Barrier();
        for (var half = 0; half < 2; half++)
        {
            var local = (warp * 16) + g + (8 * half);
            var row = TileAxis.QueryRow(p, tile, axis0, axis1, axis2, local, batch, head);
            if (row < 0)
            {
                continue;
            }

            var sum = rowSum[local];
            var inverse = sum == 0f ? 0f : 1f / sum;
            for (var n = 0; n < p.ValueDim / 8; n++)
            {
                for (var j = 0; j < 2; j++)
                {
                    output[(row * p.ValueDim) + (n * 8) + (2 * t) + j] = TFormat.FromFloat(accumulators[(n * 4) + (2 * half) + j] * inverse);
                }
            }

            if (writeLse != 0 && t == 0)
            {
                lse[row] = sum == 0f ? float.NegativeInfinity : (rowMax[local] + XMath.Log2(sum)) * 0.6931471805599453f;
            }
        }
    }

    /// <summary>S = Q·Kᵀ · scale·log2 e for this warp's 16 rows and every key of the sub-tile, into shared floats.</summary>
    private static void Scores<TFormat>(
        ProblemParams p, int warp, int g, int t, int keys, ArrayView<ushort> qTile, ArrayView<ushort> kTile, ArrayView<float> scores,
        float scoreScale, ArrayView<uint> scratch)
        where TFormat : struct, IHalfFormat
    {
        for (var n = 0; n < keys / 8; n++)
        {
            float c0 = 0f, c1 = 0f, c2 = 0f, c3 = 0f;
            WarpProducts.ProductNT<TFormat>(qTile, p.HeadDim, warp * 16, kTile, p.HeadDim, n * 8, p.HeadDim, g, t, ref c0, ref c1, ref c2, ref c3, scratch);
            WarpProducts.Store(scores, keys, warp * 16, n * 8, g, t, scoreScale, c0, c1, c2, c3);
        }
    }

    /// <summary>
    /// One row's online-softmax step over the sub-tile: new max over the keys the mask allows, the
    /// rescale factor for the row's output, the running sum, and P (rounded to the input format; 0 where masked).
    /// </summary>
    private static void SoftmaxRow<TFormat, TMask>(
        TMask mask, bool valid, int local, int a0, int a1, int a2, int extent1, int extent2, int keys,
        ArrayView<float> scores, ArrayView<ushort> pTile, ArrayView<float> rowMax, ArrayView<float> rowSum, ArrayView<float> rowScale)
        where TFormat : struct, IHalfFormat
        where TMask : struct, IKeyMask
    {
        var previous = rowMax[local];
        var max = previous;
        for (var slot = 0; slot < keys; slot++)
        {
            var s = scores[(local * keys) + slot];
            if (valid && Allowed(mask, slot, a0, a1, a2, extent1, extent2) && s > max)
            {
                max = s;
            }
        }

        // No key seen yet: keep the accumulators as they are (all zero) and write P = 0.
        var correction = max == float.NegativeInfinity ? 1f : XMath.Exp2(previous - max);
        var sum = rowSum[local] * correction;
        for (var slot = 0; slot < keys; slot++)
        {
            var s = scores[(local * keys) + slot];
            var pValue = valid && Allowed(mask, slot, a0, a1, a2, extent1, extent2) ? XMath.Exp2(s - max) : 0f;
            pTile[(local * keys) + slot] = TFormat.FromFloat(pValue);

            // As FlashAttention-2: the running sum (hence the LSE) in float32; only P·V sees the rounded P.
            sum += pValue;
        }

        rowMax[local] = max;
        rowSum[local] = sum;
        rowScale[local] = correction;
    }

    private static bool Allowed<TMask>(TMask mask, int slot, int a0, int a1, int a2, int extent1, int extent2)
        where TMask : struct, IKeyMask
        => mask.Allows(a0 + (slot / extent2 / extent1), a1 + (slot / extent2 % extent1), a2 + (slot % extent2));

    internal static void StageNeighborhood(
        ProblemParams p, FnaTileShape tile, TileAxis axis0, TileAxis axis1, TileAxis axis2, int a0, int a1, int a2,
        int batch, int kvHead, ArrayView<ushort> key, ArrayView<ushort> value, ArrayView<ushort> kTile, ArrayView<ushort> vTile, int tid, int threads)
        => StageNeighborhood(p, tile, axis0, axis1, axis2, a0, a1, a2, batch, kvHead, key, value, kTile, p.HeadDim, vTile, p.ValueDim, tid, threads);

    /// <summary>
    /// Stages the KV sub-tile at group coordinates (a0, a1, a2) into shared memory, key slot s at
    /// <c>kTile[s · kStride …]</c> and <c>vTile[s · vStride …]</c> (strides ≥ D, Dv: padded rows avoid bank
    /// conflicts in fragment loads); slots past the end of the dilation group are zero.
    /// </summary>
    internal static void StageNeighborhood(
        ProblemParams p, FnaTileShape tile, TileAxis axis0, TileAxis axis1, TileAxis axis2, int a0, int a1, int a2,
        int batch, int kvHead, ArrayView<ushort> key, ArrayView<ushort> value, ArrayView<ushort> kTile, int kStride, ArrayView<ushort> vTile, int vStride,
        int tid, int threads)
    {
        for (var e = tid; e < tile.KeyTile * p.HeadDim; e += threads)
        {
            var slot = e / p.HeadDim;
            var row = TileAxis.KeyRow(p, tile, axis0, axis1, axis2, a0, a1, a2, slot, batch, kvHead);
            kTile[(slot * kStride) + (e % p.HeadDim)] = row < 0 ? (ushort)0 : key[(row * p.HeadDim) + (e % p.HeadDim)];
        }

        for (var e = tid; e < tile.KeyTile * p.ValueDim; e += threads)
        {
            var slot = e / p.ValueDim;
            var row = TileAxis.KeyRow(p, tile, axis0, axis1, axis2, a0, a1, a2, slot, batch, kvHead);
            vTile[(slot * vStride) + (e % p.ValueDim)] = row < 0 ? (ushort)0 : value[(row * p.ValueDim) + (e % p.ValueDim)];
        }
    }

    internal static void StageAdditional(
        ProblemParams p, int keys, int m, int batch, int kvHead, ArrayView<ushort> key, ArrayView<ushort> value,
        ArrayView<ushort> kTile, ArrayView<ushort> vTile, int tid, int threads)
        => StageAdditional(p, keys, m, batch, kvHead, key, value, kTile, p.HeadDim, vTile, p.ValueDim, tid, threads);

    /// <summary>Stages additional tokens m … m + keys − 1 (zero past the last one), rows <paramref name="kStride"/> / <paramref name="vStride"/> apart.</summary>
    internal static void StageAdditional(
        ProblemParams p, int keys, int m, int batch, int kvHead, ArrayView<ushort> key, ArrayView<ushort> value,
        ArrayView<ushort> kTile, int kStride, ArrayView<ushort> vTile, int vStride, int tid, int threads)
    {
        for (var e = tid; e < keys * p.HeadDim; e += threads)
        {
            var slot = e / p.HeadDim;
            var token = m + slot;
            var row = ((((long)batch * p.AdditionalTokens) + token) * p.KvHeads) + kvHead;
            kTile[(slot * kStride) + (e % p.HeadDim)] = token < p.AdditionalTokens ? key[(row * p.HeadDim) + (e % p.HeadDim)] : (ushort)0;
        }

        for (var e = tid; e < keys * p.ValueDim; e += threads)
        {
            var slot = e / p.ValueDim;
            var token = m + slot;
            var row = ((((long)batch * p.AdditionalTokens) + token) * p.KvHeads) + kvHead;
            vTile[(slot * vStride) + (e % p.ValueDim)] = token < p.AdditionalTokens ? value[(row * p.ValueDim) + (e % p.ValueDim)] : (ushort)0;
        }
    }

}
