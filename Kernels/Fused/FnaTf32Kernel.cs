using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using Natten.Kernels.Common;
using Natten.Kernels.Cuda;
using Natten.Kernels.Runtime;

namespace Natten.Kernels.Fused;

/// <summary>
/// Fused neighborhood attention forward for float32 data on TF32 tensor cores (opt-in: TF32 keeps 10
/// mantissa bits, so results differ from float32 math by ~1e-3 relative). The same tiling, masking and
/// online softmax as <see cref="FnaTensorCoreKernel"/>: one group per (query tile, head, batch), 16·W
/// queries in W warps; per KV sub-tile S = Q·Kᵀ with <c>mma.sync m16n8k8 .tf32</c> into shared floats,
/// the row-wise online softmax (exp2) writing P in place over S (rounded to TF32), then O += P·V with O
/// in per-lane accumulators. Q, K, V are rounded to TF32 once while staged (<see cref="Tf32.Round"/>).
/// Where <c>mma.sync</c> is unavailable the fragments go through <see cref="Tf32.Emulate"/>.
/// </summary>
/// <remarks>
/// Requirements (checked by <see cref="FnaTf32.Check"/>): D and Dv multiples of 8 (Dv ≤ <see cref="MaxValueDim"/>),
/// query tile 16·W (W ≤ 4), KV sub-tile a multiple of 8, query tile × sub-tile ≤ <see cref="MaxScores"/>.
/// Dynamic shared memory (floats): Q [tile × D], K [sub-tile × D], V [sub-tile × Dv].
/// Like the half-precision version 1 kernel, the O accumulators live in a local array (ILGPU does not unroll).
/// </remarks>
internal static class FnaTf32Kernel
{
    public const int MaxWarps = 4;
    public const int MaxScores = 64 * 32;
    public const int MaxValueDim = 256;
    private const float Log2E = 1.4426950408889634f;

    public static void Forward(
        ProblemParams p, FnaTileShape tile, ArrayView<float> query, ArrayView<float> key, ArrayView<float> value,
        ArrayView<float> additionalKey, ArrayView<float> additionalValue, ArrayView<float> output, ArrayView<float> lse, int writeLse)
    {
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
        var keys = tile.KeyTile;
        var shared = SharedMemory.GetDynamic<float>();
        var qTile = shared.SubView(0, tile.QueryTile * p.HeadDim);
        var kTile = shared.SubView(tile.QueryTile * p.HeadDim, keys * p.HeadDim);
        var vTile = shared.SubView((tile.QueryTile + keys) * p.HeadDim, keys * p.ValueDim);

        for (var e = tid; e < tile.QueryTile * p.HeadDim; e += threads)
        {
            var row = TileAxis.QueryRow(p, tile, axis0, axis1, axis2, e / p.HeadDim, batch, head);
            qTile[e] = row < 0 ? 0f : Tf32.Round(query[(row * p.HeadDim) + (e % p.HeadDim)]);
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
                    for (var e = tid; e < keys * p.HeadDim; e += threads)
                    {
                        var row = TileAxis.KeyRow(p, tile, axis0, axis1, axis2, a0, a1, a2, e / p.HeadDim, batch, kvHead);
                        kTile[e] = row < 0 ? 0f : Tf32.Round(key[(row * p.HeadDim) + (e % p.HeadDim)]);
                    }

                    for (var e = tid; e < keys * p.ValueDim; e += threads)
                    {
                        var row = TileAxis.KeyRow(p, tile, axis0, axis1, axis2, a0, a1, a2, e / p.ValueDim, batch, kvHead);
                        vTile[e] = row < 0 ? 0f : Tf32.Round(value[(row * p.ValueDim) + (e % p.ValueDim)]);
                    }

                    Group.Barrier();
                    Scores(p, warp, g, t, keys, qTile, kTile, scores, scoreScale, scratch);
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
                            SoftmaxRow(new NoMask(), valid, local, a0, a1, a2, tile.K1, tile.K2, keys, scores, rowMax, rowSum, rowScale);
                        }
                        else
                        {
                            var window = new WindowMask(
                                axis0.WindowStart(q0), axis0.WindowEnd(q0), axis1.WindowStart(q1), axis1.WindowEnd(q1), axis2.WindowStart(q2), axis2.WindowEnd(q2));
                            SoftmaxRow(window, valid, local, a0, a1, a2, tile.K1, tile.K2, keys, scores, rowMax, rowSum, rowScale);
                        }
                    }

                    Group.Barrier();
                    UpdateOutput(p, warp, g, t, keys, scores, vTile, rowScale, accumulators, scratch);
                }
            }
        }

        for (var m = 0; m < p.AdditionalTokens; m += keys)
        {
            Group.Barrier();
            for (var e = tid; e < keys * p.HeadDim; e += threads)
            {
                var token = m + (e / p.HeadDim);
                var row = ((((long)batch * p.AdditionalTokens) + token) * p.KvHeads) + kvHead;
                kTile[e] = token < p.AdditionalTokens ? Tf32.Round(additionalKey[(row * p.HeadDim) + (e % p.HeadDim)]) : 0f;
            }

            for (var e = tid; e < keys * p.ValueDim; e += threads)
            {
                var token = m + (e / p.ValueDim);
                var row = ((((long)batch * p.AdditionalTokens) + token) * p.KvHeads) + kvHead;
                vTile[e] = token < p.AdditionalTokens ? Tf32.Round(additionalValue[(row * p.ValueDim) + (e % p.ValueDim)]) : 0f;
            }

            Group.Barrier();
            Scores(p, warp, g, t, keys, qTile, kTile, scores, scoreScale, scratch);
            Group.Barrier();
            if (lane < 16)
            {
                var local = (warp * 16) + lane;
                var valid = axis0.HasQuery(local / tile.Q2 / tile.Q1) && axis1.HasQuery(local / tile.Q2 % tile.Q1) && axis2.HasQuery(local % tile.Q2);
                SoftmaxRow(new PrefixMask(p.AdditionalTokens - m), valid, local, 0, 0, 0, 1, keys, keys, scores, rowMax, rowSum, rowScale);
            }

            Group.Barrier();
            UpdateOutput(p, warp, g, t, keys, scores, vTile, rowScale, accumulators, scratch);
        }

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
                output[(row * p.ValueDim) + (n * 8) + (2 * t)] = accumulators[(n * 4) + (2 * half)] * inverse;
                output[(row * p.ValueDim) + (n * 8) + (2 * t) + 1] = accumulators[(n * 4) + (2 * half) + 1] * inverse;
            }

            if (writeLse != 0 && t == 0)
            {
                lse[row] = sum == 0f ? float.NegativeInfinity : (rowMax[local] + XMath.Log2(sum)) * 0.6931471805599453f;
            }
        }
    }

    private static void Scores(
        ProblemParams p, int warp, int g, int t, int keys, ArrayView<float> qTile, ArrayView<float> kTile, ArrayView<float> scores,
        float scoreScale, ArrayView<uint> scratch)
    {
        for (var n = 0; n < keys / 8; n++)
        {
            float c0 = 0f, c1 = 0f, c2 = 0f, c3 = 0f;
            Tf32.ProductNT(qTile, p.HeadDim, warp * 16, kTile, p.HeadDim, n * 8, p.HeadDim, g, t, ref c0, ref c1, ref c2, ref c3, scratch);
            WarpProducts.Store(scores, keys, warp * 16, n * 8, g, t, scoreScale, c0, c1, c2, c3);
        }
    }

    /// <summary>One row's online-softmax step; P (TF32-rounded, 0 where masked) overwrites the row's scores.</summary>
    private static void SoftmaxRow<TMask>(
        TMask mask, bool valid, int local, int a0, int a1, int a2, int extent1, int extent2, int keys,
        ArrayView<float> scores, ArrayView<float> rowMax, ArrayView<float> rowSum, ArrayView<float> rowScale)
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

        var correction = max == float.NegativeInfinity ? 1f : XMath.Exp2(previous - max);
        var sum = rowSum[local] * correction;
        for (var slot = 0; slot < keys; slot++)
        {
            var s = scores[(local * keys) + slot];
            var pValue = valid && Allowed(mask, slot, a0, a1, a2, extent1, extent2) ? XMath.Exp2(s - max) : 0f;
            scores[(local * keys) + slot] = Tf32.Round(pValue);
            sum += pValue;
        }

        rowMax[local] = max;
        rowSum[local] = sum;
        rowScale[local] = correction;
    }

    private static void UpdateOutput(
        ProblemParams p, int warp, int g, int t, int keys, ArrayView<float> pTile, ArrayView<float> vTile, ArrayView<float> rowScale,
        ArrayView<float> accumulators, ArrayView<uint> scratch)
    {
        var scaleTop = rowScale[(warp * 16) + g];
        var scaleBottom = rowScale[(warp * 16) + g + 8];
        for (var n = 0; n < p.ValueDim / 8; n++)
        {
            var c0 = accumulators[n * 4] * scaleTop;
            var c1 = accumulators[(n * 4) + 1] * scaleTop;
            var c2 = accumulators[(n * 4) + 2] * scaleBottom;
            var c3 = accumulators[(n * 4) + 3] * scaleBottom;
            Tf32.ProductNN(pTile, keys, warp * 16, vTile, p.ValueDim, n * 8, keys, g, t, ref c0, ref c1, ref c2, ref c3, scratch);
            accumulators[n * 4] = c0;
            accumulators[(n * 4) + 1] = c1;
            accumulators[(n * 4) + 2] = c2;
            accumulators[(n * 4) + 3] = c3;
        }
    }

    private static bool Allowed<TMask>(TMask mask, int slot, int a0, int a1, int a2, int extent1, int extent2)
        where TMask : struct, IKeyMask
        => mask.Allows(a0 + (slot / extent2 / extent1), a1 + (slot / extent2 % extent1), a2 + (slot % extent2));
}

/// <summary>The TF32 forward kernel, compiled once per accelerator.</summary>
internal sealed class FnaTf32KernelSet
{
    public FnaTf32KernelSet(Accelerator accelerator)
        => Forward = accelerator.LoadKernel<ProblemParams, FnaTileShape, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(
            FnaTf32Kernel.Forward);

    public Action<AcceleratorStream, KernelConfig, ProblemParams, FnaTileShape, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int> Forward { get; }
}

/// <summary>Host side of the TF32 forward: default tiles, limits and the launch (no workspace).</summary>
internal static class FnaTf32
{
    /// <summary>Bytes of static shared memory the kernel declares.</summary>
    public const int StaticSharedBytes =
        (FnaTf32Kernel.MaxScores + (3 * 16 * FnaTf32Kernel.MaxWarps)) * sizeof(float)
        + (TensorCore.ScratchWordsPerWarp * FnaTf32Kernel.MaxWarps * sizeof(uint));

    /// <summary>Dynamic shared memory in floats: Q, K and V tiles.</summary>
    public static int DynamicSharedFloats(ProblemParams p, FnaTileShape tile)
        => (tile.QueryTile * p.HeadDim) + (tile.KeyTile * (p.HeadDim + p.ValueDim));

    /// <summary>
    /// Defaults: for D ≤ 64, 64 / 8×8 / 4×4×4 queries with 32 / 4×8 / 2×4×4 keys; for larger D, 32 / 4×8 / 2×4×4
    /// queries with 16 / 4×4 / 1×4×4 keys, so that the float tiles fit 48 KB of shared memory up to D = 128.
    /// </summary>
    public static FnaTileShape Default(int rank, int headDim)
    {
        var large = headDim > 64;
        return rank switch
        {
            1 => large ? new FnaTileShape(1, 1, 32, 1, 1, 16) : new FnaTileShape(1, 1, 64, 1, 1, 32),
            2 => large ? new FnaTileShape(1, 4, 8, 1, 4, 4) : new FnaTileShape(1, 8, 8, 1, 4, 8),
            _ => large ? new FnaTileShape(2, 4, 4, 1, 4, 4) : new FnaTileShape(4, 4, 4, 2, 4, 4),
        };
    }

    /// <summary>Why the TF32 kernel cannot run this problem and tile on the device, or null.</summary>
    public static string? Check(ComputeDevice device, ProblemParams p, FnaTileShape tile)
    {
        if (p.HeadDim % 8 != 0 || p.ValueDim % 8 != 0 || p.ValueDim > FnaTf32Kernel.MaxValueDim)
        {
            return $"the TF32 kernel needs D % 8 == 0 and Dv % 8 == 0 with Dv ≤ {FnaTf32Kernel.MaxValueDim} (D={p.HeadDim}, Dv={p.ValueDim})";
        }

        if (tile.QueryTile % 16 != 0 || tile.QueryTile > 16 * FnaTf32Kernel.MaxWarps || tile.KeyTile % 8 != 0
            || tile.QueryTile * tile.KeyTile > FnaTf32Kernel.MaxScores)
        {
            return $"tile shape {tile}: the TF32 kernel needs a query tile of 16, 32, 48 or 64 and a KV sub-tile that is a multiple of 8 (tile × sub-tile ≤ {FnaTf32Kernel.MaxScores})";
        }

        if (device.Accelerator.WarpSize != 32)
        {
            return $"the TF32 kernel needs 32-lane warps; {device.Name} has {device.Accelerator.WarpSize}";
        }

        return device.CheckSharedMemory(
                $"tile shape {tile} with D={p.HeadDim}, Dv={p.ValueDim}", (long)DynamicSharedFloats(p, tile) * sizeof(float), StaticSharedBytes)
            ?? FnaForward.CheckGrid(device, p, tile);
    }

    public static void Forward(
        ComputeDevice device, AcceleratorStream stream, ProblemParams p, FnaTileShape tile,
        ArrayView<float> query, ArrayView<float> key, ArrayView<float> value, ArrayView<float> additionalKey, ArrayView<float> additionalValue,
        ArrayView<float> output, ArrayView<float> lse)
    {
        var kernels = device.Kernels(a => new FnaTf32KernelSet(a));
        var tiles = p.D0 * FnaForwardKernel.TilesPerGroup(p.N0, p.D0, tile.Q0)
            * p.D1 * FnaForwardKernel.TilesPerGroup(p.N1, p.D1, tile.Q1)
            * p.D2 * FnaForwardKernel.TilesPerGroup(p.N2, p.D2, tile.Q2);
        var config = new KernelConfig(
            new Index3D(tiles, p.Heads, p.Batch),
            new Index3D(tile.QueryTile * 2, 1, 1),
            SharedMemoryConfig.RequestDynamic<float>(DynamicSharedFloats(p, tile)));
        device.PrepareSharedMemory(kernels.Forward, config);
        kernels.Forward(stream, config, p, tile, query, key, value, additionalKey, additionalValue, output, lse, lse.Length > 0 ? 1 : 0);
    }
}
