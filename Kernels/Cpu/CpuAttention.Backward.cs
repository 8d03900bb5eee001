using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Natten.Kernels.Common;

namespace Natten.Kernels.Cpu;

internal static unsafe partial class CpuAttention
{
    /// <summary>Partial-gradient slots for the additional tokens are kept under this many floats (256 MiB).</summary>
    private const long MaxSlotFloats = 64L << 20;

    /// <summary>Backward pass on float32 tensors: dQ, dK, dV and the additional tokens' gradients.</summary>
    public static void Backward(
        in ProblemParams p, ReadOnlySpan<float> query, ReadOnlySpan<float> key, ReadOnlySpan<float> value,
        ReadOnlySpan<float> additionalKey, ReadOnlySpan<float> additionalValue, ReadOnlySpan<float> output,
        ReadOnlySpan<float> lse, ReadOnlySpan<float> outputGrad, Span<float> queryGrad, Span<float> keyGrad, Span<float> valueGrad,
        Span<float> additionalKeyGrad, Span<float> additionalValueGrad, CpuOptions? options = null)
    {
        options ??= CpuOptions.Default;
        fixed (float* q = query, k = key, v = value, ak = additionalKey, av = additionalValue, o = output, l = lse, dO = outputGrad)
        {
            fixed (float* dq = queryGrad, dk = keyGrad, dv = valueGrad, dak = additionalKeyGrad, dav = additionalValueGrad)
            {
                var io = new BackwardPointers(q, k, v, ak, av, o, l, dO, dq, dk, dv, dak, dav);
                switch (options.ResolvedVectorBits)
                {
                    case 512:
                        Backward<Vector512<float>, Simd512>(p, io, options);
                        break;
                    case 256:
                        Backward<Vector256<float>, Simd256>(p, io, options);
                        break;
                    default:
                        Backward<Vector128<float>, Simd128>(p, io, options);
                        break;
                }
            }
        }
    }

    /// <summary>Backward pass on Half tensors (converted to float32 and back); LSE stays float32.</summary>
    public static void Backward(
        in ProblemParams p, ReadOnlySpan<Half> query, ReadOnlySpan<Half> key, ReadOnlySpan<Half> value,
        ReadOnlySpan<Half> additionalKey, ReadOnlySpan<Half> additionalValue, ReadOnlySpan<Half> output,
        ReadOnlySpan<float> lse, ReadOnlySpan<Half> outputGrad, Span<Half> queryGrad, Span<Half> keyGrad, Span<Half> valueGrad,
        Span<Half> additionalKeyGrad, Span<Half> additionalValueGrad, CpuOptions? options = null)
    {
        options ??= CpuOptions.Default;
        using var q = HalfConversion.ToSingle(query, options);
        using var k = HalfConversion.ToSingle(key, options);
        using var v = HalfConversion.ToSingle(value, options);
        using var ak = HalfConversion.ToSingle(additionalKey, options);
        using var av = HalfConversion.ToSingle(additionalValue, options);
        using var o = HalfConversion.ToSingle(output, options);
        using var dO = HalfConversion.ToSingle(outputGrad, options);
        using var dq = PinnedBuffer.Rent(queryGrad.Length);
        using var dk = PinnedBuffer.Rent(keyGrad.Length);
        using var dv = PinnedBuffer.Rent(valueGrad.Length);
        using var dak = PinnedBuffer.Rent(additionalKeyGrad.Length);
        using var dav = PinnedBuffer.Rent(additionalValueGrad.Length);
        Backward(p, q.Span, k.Span, v.Span, ak.Span, av.Span, o.Span, lse, dO.Span, dq.Span, dk.Span, dv.Span, dak.Span, dav.Span, options);
        HalfConversion.ToHalf(dq, queryGrad, options);
        HalfConversion.ToHalf(dk, keyGrad, options);
        HalfConversion.ToHalf(dv, valueGrad, options);
        HalfConversion.ToHalf(dak, additionalKeyGrad, options);
        HalfConversion.ToHalf(dav, additionalValueGrad, options);
    }

    private static void Backward<TV, TS>(in ProblemParams p, BackwardPointers io, CpuOptions options)
        where TV : struct
        where TS : struct, ISimdOps<TV>
    {
        var layout = new CpuLayout(p, TS.Width);
        var parallel = options.Parallel;
        var n = layout.Tokens;
        var rows = p.Batch * n * p.Heads;

        // Δ = rowsum(dO ∘ O) per query row, and Δ and the LSE transposed to [B, H, N] for the dK/dV pass.
        using var delta = PinnedBuffer.Rent(rows);
        RowDots<TV, TS>(io.OutputGrad, io.Output, p.ValueDim, rows, delta.Pointer, parallel);
        using var deltaT = PinnedBuffer.Rent(rows + layout.Width);
        using var lseT = PinnedBuffer.Rent(rows + layout.Width);
        CpuLayout.TransposeHeads(delta.Pointer, p.Batch, n, p.Heads, 1, deltaT.Pointer, n, parallel);
        CpuLayout.TransposeHeads(io.Lse, p.Batch, n, p.Heads, 1, lseT.Pointer, n, parallel);

        using var queryT = PinnedBuffer.Rent(layout.TransposedLength(p.Heads, p.HeadDim));
        using var outputGradT = PinnedBuffer.Rent(layout.TransposedLength(p.Heads, p.ValueDim));
        using var keyT = PinnedBuffer.Rent(layout.TransposedLength(p.KvHeads, p.HeadDim));
        using var valueT = PinnedBuffer.Rent(layout.TransposedLength(p.KvHeads, p.ValueDim));
        var stride = layout.TransposedStride;
        CpuLayout.TransposeHeads(io.Query, p.Batch, n, p.Heads, p.HeadDim, queryT.Pointer, stride, parallel);
        CpuLayout.TransposeHeads(io.OutputGrad, p.Batch, n, p.Heads, p.ValueDim, outputGradT.Pointer, stride, parallel);
        CpuLayout.TransposeHeads(io.Key, p.Batch, n, p.KvHeads, p.HeadDim, keyT.Pointer, stride, parallel);
        CpuLayout.TransposeHeads(io.Value, p.Batch, n, p.KvHeads, p.ValueDim, valueT.Pointer, stride, parallel);

        var bkv = (long)p.Batch * p.KvHeads;
        using var additionalKeyT = PinnedBuffer.Rent(bkv * p.HeadDim * layout.AdditionalPadded);
        using var additionalValueT = PinnedBuffer.Rent(bkv * p.ValueDim * layout.AdditionalPadded);
        using var additionalKeyRows = PinnedBuffer.Rent(bkv * p.AdditionalTokens * layout.HeadDimPadded);
        if (p.AdditionalTokens > 0)
        {
            PackAdditional(layout, io.AdditionalKey, p.HeadDim, layout.AdditionalPadded, additionalKeyT.Pointer, transposed: true);
            PackAdditional(layout, io.AdditionalValue, p.ValueDim, layout.AdditionalPadded, additionalValueT.Pointer, transposed: true);
            PackAdditional(layout, io.AdditionalKey, p.HeadDim, layout.HeadDimPadded, additionalKeyRows.Pointer, transposed: false);
        }

        var tileExtent = options.TileExtent ?? ForwardTile(layout);
        var queryPlan = CpuTilePlan.Create(layout.Axes, tileExtent, inverse: false);
        var slotLength = (long)p.AdditionalTokens * (layout.HeadDimPadded + layout.ValueDimPadded);
        var tilesPerTask = 1;
        if (slotLength > 0)
        {
            var all = bkv * queryPlan.Tiles.Length * slotLength;
            tilesPerTask = (int)Math.Min(queryPlan.Tiles.Length, Math.Max(1, (all + MaxSlotFloats - 1) / MaxSlotFloats));
        }

        var tasksPerHead = (queryPlan.Tiles.Length + tilesPerTask - 1) / tilesPerTask;
        using var slots = PinnedBuffer.Rent(bkv * tasksPerHead * slotLength);
        var tensors = new CpuBackwardTensors
        {
            Query = io.Query,
            Key = io.Key,
            OutputGrad = io.OutputGrad,
            Lse = io.Lse,
            Delta = delta.Pointer,
            LseT = lseT.Pointer,
            DeltaT = deltaT.Pointer,
            QueryT = queryT.Pointer,
            KeyT = keyT.Pointer,
            ValueT = valueT.Pointer,
            OutputGradT = outputGradT.Pointer,
            AdditionalKeyT = additionalKeyT.Pointer,
            AdditionalValueT = additionalValueT.Pointer,
            AdditionalKeyRows = additionalKeyRows.Pointer,
            AdditionalSlots = slots.Pointer,
            QueryGrad = io.QueryGrad,
            KeyGrad = io.KeyGrad,
            ValueGrad = io.ValueGrad,
        };

        var queryPass = new CpuQueryGradPass<TV, TS>(layout, queryPlan, tensors, tilesPerTask);
        Parallel.For(
            0L, queryPass.TaskCount, parallel, CpuWorkspace.Rent,
            (task, _, ws) =>
            {
                queryPass.Run(task, ws);
                return ws;
            },
            CpuWorkspace.Return);

        var keyPlan = CpuTilePlan.Create(layout.Axes, tileExtent, inverse: true);
        var keyPass = new CpuKeyValueGradPass<TV, TS>(layout, keyPlan, tensors, io.Value);
        Parallel.For(
            0L, keyPass.TaskCount, parallel, CpuWorkspace.Rent,
            (task, _, ws) =>
            {
                keyPass.Run(task, ws);
                return ws;
            },
            CpuWorkspace.Return);

        if (p.AdditionalTokens > 0)
        {
            ReduceAdditional<TV, TS>(layout, slots.Pointer, tasksPerHead, io.AdditionalKeyGrad, io.AdditionalValueGrad, parallel);
        }
    }

    /// <summary><c>result[i] = Σ_c x[i, c] · y[i, c]</c> for <paramref name="rows"/> rows of <paramref name="channels"/>.</summary>
    private static void RowDots<TV, TS>(float* x, float* y, int channels, long rows, float* result, ParallelOptions parallel)
        where TV : struct
        where TS : struct, ISimdOps<TV>
    {
        const int Chunk = 256;
        Parallel.For(0L, (rows + Chunk - 1) / Chunk, parallel, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (chunk) =>
        {
            var w = TS.Width;
            for (var row = chunk * Chunk; row < Math.Min(rows, (chunk + 1) * Chunk); row++)
            {
                var a = x + (row * channels);
                var b = y + (row * channels);
                var acc = TS.Zero;
                var c = 0;
                for (; c + w <= channels; c += w)
                {
                    acc = TS.MulAdd(TS.Load(a + c), TS.Load(b + c), acc);
                }

                var sum = TS.Sum(acc);
                for (; c < channels; c++)
                {
                    sum = MathF.FusedMultiplyAdd(a[c], b[c], sum);
                }

                result[row] = sum;
            }
        });
    }

    /// <summary>Sums the per-task partial gradients of the additional tokens in task order and stores them.</summary>
    private static void ReduceAdditional<TV, TS>(
        CpuLayout layout, float* slots, int tasksPerHead, float* keyGrad, float* valueGrad, ParallelOptions parallel)
        where TV : struct
        where TS : struct, ISimdOps<TV>
    {
        var p = layout.P;
        var dp = layout.HeadDimPadded;
        var dvp = layout.ValueDimPadded;
        var slotLength = (long)p.AdditionalTokens * (dp + dvp);
        Parallel.For(0L, (long)p.Batch * p.KvHeads * p.AdditionalTokens, parallel, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (index) =>
        {
            var m = (int)(index % p.AdditionalTokens);
            var bk = index / p.AdditionalTokens;
            var kvHead = (int)(bk % p.KvHeads);
            var b = bk / p.KvHeads;
            var k = stackalloc float[dp];
            var v = stackalloc float[dvp];
            new Span<float>(k, dp).Clear();
            new Span<float>(v, dvp).Clear();
            for (var task = 0; task < tasksPerHead; task++)
            {
                var slot = slots + (((bk * tasksPerHead) + task) * slotLength);
                CpuQueryGradPass<TV, TS>.AddScaled(k, slot + ((long)m * dp), 1, dp);
                CpuQueryGradPass<TV, TS>.AddScaled(v, slot + ((long)p.AdditionalTokens * dp) + ((long)m * dvp), 1, dvp);
            }

            var token = (((b * p.AdditionalTokens) + m) * p.KvHeads) + kvHead;
            CpuQueryGradPass<TV, TS>.Store(k, keyGrad + (token * p.HeadDim), p.HeadDim, p.Scale);
            CpuQueryGradPass<TV, TS>.Store(v, valueGrad + (token * p.ValueDim), p.ValueDim, 1);
        });
    }

    /// <summary>The caller's pinned spans of one backward call.</summary>
    private readonly struct BackwardPointers(
        float* query, float* key, float* value, float* additionalKey, float* additionalValue, float* output, float* lse, float* outputGrad,
        float* queryGrad, float* keyGrad, float* valueGrad, float* additionalKeyGrad, float* additionalValueGrad)
    {
        public float* Query { get; } = query;

        public float* Key { get; } = key;

        public float* Value { get; } = value;

        public float* AdditionalKey { get; } = additionalKey;

        public float* AdditionalValue { get; } = additionalValue;

        public float* Output { get; } = output;

        public float* Lse { get; } = lse;

        public float* OutputGrad { get; } = outputGrad;

        public float* QueryGrad { get; } = queryGrad;

        public float* KeyGrad { get; } = keyGrad;

        public float* ValueGrad { get; } = valueGrad;

        public float* AdditionalKeyGrad { get; } = additionalKeyGrad;

        public float* AdditionalValueGrad { get; } = additionalValueGrad;
    }
}
