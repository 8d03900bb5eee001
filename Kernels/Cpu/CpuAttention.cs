using System.Runtime.Intrinsics;
using Natten.Kernels.Common;

namespace Natten.Kernels.Cpu;

/// <summary>
/// Neighborhood attention on the CPU in plain C#: SIMD (512-, 256- or 128-bit vectors by what the
/// hardware accelerates) and <see cref="Parallel"/> over batch × KV heads × tiles. float32 arithmetic;
/// Half storage is converted at the edges. Every output element is written by exactly one task in a
/// fixed order, so results are bit-identical from run to run and for any thread count.
/// </summary>
/// <remarks>
/// Spans are pinned for the duration of a call and reached through pointers by the workers. The
/// caller (the backend) has validated the problem and the span lengths.
/// </remarks>
internal static unsafe partial class CpuAttention
{
    /// <summary>
    /// Whether the kernels can hold this problem's per-call buffers (each at most 2³¹ − 1 floats: the
    /// transposed copies and, in the backward, the additional tokens' partial gradients); otherwise why not.
    /// </summary>
    public static bool CanRun(in ProblemParams p, bool backward, out string reason)
    {
        var channels = (long)Math.Max(p.Heads, p.KvHeads) * Math.Max(p.HeadDim, p.ValueDim);
        var largest = (p.Batch * channels * CpuLayout.TransposedStrideFor(p.Tokens)) + 64;
        if (backward && p.AdditionalTokens > 0)
        {
            largest = Math.Max(largest, (long)p.Batch * p.KvHeads * p.AdditionalTokens * (CpuLayout.RoundUp(p.HeadDim, 16) + CpuLayout.RoundUp(p.ValueDim, 16)));
        }

        if (largest > int.MaxValue - 64)
        {
            reason = $"a per-call buffer would need {largest:N0} floats (at most {int.MaxValue - 64:N0} in one .NET array)";
            return false;
        }

        reason = string.Empty;
        return true;
    }

    /// <summary>Forward pass on float32 tensors; <paramref name="lse"/> may be empty.</summary>
    public static void Forward(
        in ProblemParams p, ReadOnlySpan<float> query, ReadOnlySpan<float> key, ReadOnlySpan<float> value,
        ReadOnlySpan<float> additionalKey, ReadOnlySpan<float> additionalValue, Span<float> output, Span<float> lse,
        CpuOptions? options = null)
    {
        options ??= CpuOptions.Default;
        fixed (float* q = query, k = key, v = value, ak = additionalKey, av = additionalValue, o = output, l = lse)
        {
            switch (options.ResolvedVectorBits)
            {
                case 512:
                    Forward<Vector512<float>, Simd512>(p, q, k, v, ak, av, o, lse.IsEmpty ? null : l, options);
                    break;
                case 256:
                    Forward<Vector256<float>, Simd256>(p, q, k, v, ak, av, o, lse.IsEmpty ? null : l, options);
                    break;
                default:
                    Forward<Vector128<float>, Simd128>(p, q, k, v, ak, av, o, lse.IsEmpty ? null : l, options);
                    break;
            }
        }
    }

    /// <summary>Forward pass on Half tensors (converted to float32 and back).</summary>
    public static void Forward(
        in ProblemParams p, ReadOnlySpan<Half> query, ReadOnlySpan<Half> key, ReadOnlySpan<Half> value,
        ReadOnlySpan<Half> additionalKey, ReadOnlySpan<Half> additionalValue, Span<Half> output, Span<float> lse,
        CpuOptions? options = null)
    {
        options ??= CpuOptions.Default;
        using var q = HalfConversion.ToSingle(query, options);
        using var k = HalfConversion.ToSingle(key, options);
        using var v = HalfConversion.ToSingle(value, options);
        using var ak = HalfConversion.ToSingle(additionalKey, options);
        using var av = HalfConversion.ToSingle(additionalValue, options);
        using var o = PinnedBuffer.Rent(output.Length);
        Forward(p, q.Span, k.Span, v.Span, ak.Span, av.Span, o.Span, lse, options);
        HalfConversion.ToHalf(o, output, options);
    }

    private static void Forward<TV, TS>(
        in ProblemParams p, float* query, float* key, float* value, float* additionalKey, float* additionalValue,
        float* output, float* lse, CpuOptions options)
        where TV : struct
        where TS : struct, ISimdOps<TV>
    {
        var layout = new CpuLayout(p, TS.Width);
        var plan = CpuTilePlan.Create(layout.Axes, options.TileExtent ?? ForwardTile(layout), inverse: false);
        var parallel = options.Parallel;
        using var keyT = PinnedBuffer.Rent(layout.TransposedLength(p.KvHeads, p.HeadDim));
        CpuLayout.TransposeHeads(key, p.Batch, layout.Tokens, p.KvHeads, p.HeadDim, keyT.Pointer, layout.TransposedStride, parallel);
        using var additionalT = PinnedBuffer.Rent((long)p.Batch * p.KvHeads * p.HeadDim * layout.AdditionalPadded);
        using var additionalRows = PinnedBuffer.Rent((long)p.Batch * p.KvHeads * p.AdditionalTokens * layout.ValueDimPadded);
        if (p.AdditionalTokens > 0)
        {
            PackAdditional(layout, additionalKey, p.HeadDim, layout.AdditionalPadded, additionalT.Pointer, transposed: true);
            PackAdditional(layout, additionalValue, p.ValueDim, layout.ValueDimPadded, additionalRows.Pointer, transposed: false);
        }

        var pass = new CpuForwardPass<TV, TS>(layout, plan, query, keyT.Pointer, value, additionalT.Pointer, additionalRows.Pointer, output, lse);
        Parallel.For(
            0L, pass.TaskCount, parallel, CpuWorkspace.Rent,
            (task, _, ws) =>
            {
                pass.Run(task, ws);
                return ws;
            },
            CpuWorkspace.Return);
    }

    /// <summary>
    /// The automatic tile: 64 rows on a 1D problem; 8 × 16 (last two axes) on 2D and 2 × 4 × 8 on 3D,
    /// shrunk (leading axes first) so the keys and values of the tile's union, its working set, stay
    /// within about 192 KiB.
    /// </summary>
    internal static int[] ForwardTile(CpuLayout layout)
    {
        var p = layout.P;
        int[] extent = p.N0 > 1 ? [2, 4, 8] : p.N1 > 1 ? [1, 8, 16] : [1, 1, 64];
        int[] kernels = [p.K0, p.K1, p.K2];
        int[] strides = [p.S0, p.S1, p.S2];
        int[] lengths = [p.N0, p.N1, p.N2];
        var bytesPerColumn = 4L * (p.HeadDim + layout.ValueDimPadded);
        long Union()
        {
            var columns = 1L;
            for (var a = 0; a < 3; a++)
            {
                columns *= Math.Min(lengths[a], extent[a] + kernels[a] + strides[a] - 2);
            }

            return columns * bytesPerColumn;
        }

        for (var a = 0; a < 3 && Union() > 192 * 1024; a++)
        {
            while (extent[a] > 1 && Union() > 192 * 1024)
            {
                extent[a] = Math.Max(1, extent[a] / 2);
            }
        }

        while (extent[2] > CpuBlock.Rows && Union() > 192 * 1024)
        {
            extent[2] /= 2;
        }

        return extent;
    }

    /// <summary>Packs the additional keys (transposed, <c>[B, Hkv, C, padded]</c>) or values (rows, <c>[B, Hkv, Nadd, padded]</c>).</summary>
    private static void PackAdditional(CpuLayout layout, float* source, int channels, int padded, float* destination, bool transposed)
    {
        var p = layout.P;
        var n = p.AdditionalTokens;
        for (var b = 0; b < p.Batch; b++)
        {
            for (var h = 0; h < p.KvHeads; h++)
            {
                var bh = ((long)b * p.KvHeads) + h;
                var block = destination + (bh * (transposed ? channels * (long)padded : n * (long)padded));
                if (transposed)
                {
                    new Span<float>(block, channels * padded).Clear();
                }

                for (var m = 0; m < n; m++)
                {
                    var src = source + ((((long)b * n) + m) * p.KvHeads + h) * channels;
                    for (var c = 0; c < channels; c++)
                    {
                        if (transposed)
                        {
                            block[(c * padded) + m] = src[c];
                        }
                        else
                        {
                            block[((long)m * padded) + c] = src[c];
                        }
                    }

                    if (!transposed)
                    {
                        new Span<float>(block + ((long)m * padded) + channels, padded - channels).Clear();
                    }
                }
            }
        }
    }
}
