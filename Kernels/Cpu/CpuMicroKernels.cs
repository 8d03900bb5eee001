using System.Runtime.CompilerServices;

namespace Natten.Kernels.Cpu;

/// <summary>
/// The two register-tiled products every pass is made of, generic over the vector width.
/// <see cref="Scores{TV, TS}"/>: a block's 8 rows (read in place, any row stride) against its runs'
/// columns (lanes along columns), 8 × 3 vectors of accumulators (8 × 2 below 512-bit vectors).
/// <see cref="Accumulate{TV, TS}"/>: each row adds weight × row operand over exactly the columns it sees
/// (lanes along the head dimension), 4 rows × 4 (or 2, or 1) vectors; the four rows share the columns
/// all four see and each does its own edges, so a column outside a row's window is never read for that
/// row (a NaN or ∞ there cannot leak into it).
/// </summary>
internal static unsafe class CpuMicroKernels
{
    /// <summary>
    /// <c>s[r, run.ScoreColumn + c] = Σ_d rows[r · rowStride + d] · column(run.Column + c)[d]</c> for the 8 rows and
    /// every vector of runs <c>[first, first + count)</c>; <paramref name="second"/> picks the second transposed operand.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Scores<TV, TS>(
        float* rows, nint rowStride, int depth, bool second, CpuSource* sources, CpuRun[] runs, int first, int count, float* s, nint sStride)
        where TV : struct
        where TS : struct, ISimdOps<TV>
    {
        // Vectors are queued and scored three at a time with 512-bit vectors (24 accumulators: AVX-512 has
        // 32 registers), else two at a time; a group shares one column stride.
        var width = TS.Width;
        var group = width == 16 ? 3 : 2;
        var pending = stackalloc nint[3];
        var pendingOut = stackalloc nint[3];
        var queued = 0;
        nint pendingStride = 0;
        for (var i = first; i < first + count; i++)
        {
            ref var run = ref runs[i];
            var source = sources + run.Source;
            var column = (second ? source->Transposed2 : source->Transposed) + run.Column;
            var stride = second ? source->Transposed2Stride : source->TransposedStride;
            var output = s + run.ScoreColumn;
            for (var v = 0; v < run.Vectors; v++)
            {
                if (queued > 0 && pendingStride != stride)
                {
                    Flush<TV, TS>(rows, rowStride, depth, pending, pendingOut, queued, pendingStride, sStride);
                    queued = 0;
                }

                pending[queued] = (nint)(column + (v * width));
                pendingOut[queued] = (nint)(output + (v * width));
                pendingStride = stride;
                if (++queued == group)
                {
                    Flush<TV, TS>(rows, rowStride, depth, pending, pendingOut, queued, pendingStride, sStride);
                    queued = 0;
                }
            }
        }

        if (queued > 0)
        {
            Flush<TV, TS>(rows, rowStride, depth, pending, pendingOut, queued, pendingStride, sStride);
        }
    }

    /// <summary>
    /// For rows <c>[row0, row0 + 4)</c>: <c>acc[r] += Σ_c p[r, run.ScoreColumn + c] · rowOperand(run.RowColumn + c)</c>
    /// over the positions c each row sees in each run, for the accumulator columns <c>[0, width)</c>
    /// (<paramref name="width"/> a multiple of the vector width).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Accumulate<TV, TS>(
        float* p, nint pStride, CpuSource* sources, bool second, CpuRun[] runs, int first, int count, int[] ranges,
        int row0, float* acc, nint accStride, int width)
        where TV : struct
        where TS : struct, ISimdOps<TV>
    {
        var w = TS.Width;
        var column = 0;

        // Four vectors per row need 16 accumulators + 5: only with 32 vector registers (AVX-512).
        if (w == 16)
        {
            for (; column + (4 * w) <= width; column += 4 * w)
            {
                Accumulate4<TV, TS>(p, pStride, sources, second, runs, first, count, ranges, row0, acc + column, accStride, column);
            }
        }

        for (; column + (2 * w) <= width; column += 2 * w)
        {
            Accumulate2<TV, TS>(p, pStride, sources, second, runs, first, count, ranges, row0, acc + column, accStride, column);
        }

        if (column < width)
        {
            Accumulate1<TV, TS>(p, pStride, sources, second, runs, first, count, ranges, row0, acc + column, accStride, column);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Flush<TV, TS>(float* rows, nint rowStride, int depth, nint* columns, nint* outputs, int queued, nint stride, nint sStride)
        where TV : struct
        where TS : struct, ISimdOps<TV>
    {
        switch (queued)
        {
            case 3:
                Scores3<TV, TS>(rows, rowStride, depth, (float*)columns[0], (float*)columns[1], (float*)columns[2], stride, (float*)outputs[0], (float*)outputs[1], (float*)outputs[2], sStride);
                break;
            case 2:
                Scores2<TV, TS>(rows, rowStride, depth, (float*)columns[0], (float*)columns[1], stride, (float*)outputs[0], (float*)outputs[1], sStride);
                break;
            default:
                Scores1<TV, TS>(rows, rowStride, depth, (float*)columns[0], stride, (float*)outputs[0], sStride);
                break;
        }
    }

    /// <summary>8 rows × 3 vectors: 24 accumulators, for 32 vector registers (AVX-512).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Scores3<TV, TS>(
        float* rows, nint rowStride, int depth, float* a, float* b, float* c, nint stride, float* outA, float* outB, float* outC, nint sStride)
        where TV : struct
        where TS : struct, ISimdOps<TV>
    {
        TV a0 = TS.Zero, a1 = TS.Zero, a2 = TS.Zero, a3 = TS.Zero, a4 = TS.Zero, a5 = TS.Zero, a6 = TS.Zero, a7 = TS.Zero;
        TV b0 = TS.Zero, b1 = TS.Zero, b2 = TS.Zero, b3 = TS.Zero, b4 = TS.Zero, b5 = TS.Zero, b6 = TS.Zero, b7 = TS.Zero;
        TV c0 = TS.Zero, c1 = TS.Zero, c2 = TS.Zero, c3 = TS.Zero, c4 = TS.Zero, c5 = TS.Zero, c6 = TS.Zero, c7 = TS.Zero;
        var q0 = rows;
        var q1 = q0 + rowStride;
        var q2 = q1 + rowStride;
        var q3 = q2 + rowStride;
        var q4 = q3 + rowStride;
        var q5 = q4 + rowStride;
        var q6 = q5 + rowStride;
        var q7 = q6 + rowStride;
        for (nint d = 0; d < depth; d++)
        {
            var ka = TS.Load(a);
            var kb = TS.Load(b);
            var kc = TS.Load(c);
            a += stride;
            b += stride;
            c += stride;
            var x0 = TS.Broadcast(q0[d]);
            a0 = TS.MulAdd(x0, ka, a0);
            b0 = TS.MulAdd(x0, kb, b0);
            c0 = TS.MulAdd(x0, kc, c0);
            var x1 = TS.Broadcast(q1[d]);
            a1 = TS.MulAdd(x1, ka, a1);
            b1 = TS.MulAdd(x1, kb, b1);
            c1 = TS.MulAdd(x1, kc, c1);
            var x2 = TS.Broadcast(q2[d]);
            a2 = TS.MulAdd(x2, ka, a2);
            b2 = TS.MulAdd(x2, kb, b2);
            c2 = TS.MulAdd(x2, kc, c2);
            var x3 = TS.Broadcast(q3[d]);
            a3 = TS.MulAdd(x3, ka, a3);
            b3 = TS.MulAdd(x3, kb, b3);
            c3 = TS.MulAdd(x3, kc, c3);
            var x4 = TS.Broadcast(q4[d]);
            a4 = TS.MulAdd(x4, ka, a4);
            b4 = TS.MulAdd(x4, kb, b4);
            c4 = TS.MulAdd(x4, kc, c4);
            var x5 = TS.Broadcast(q5[d]);
            a5 = TS.MulAdd(x5, ka, a5);
            b5 = TS.MulAdd(x5, kb, b5);
            c5 = TS.MulAdd(x5, kc, c5);
            var x6 = TS.Broadcast(q6[d]);
            a6 = TS.MulAdd(x6, ka, a6);
            b6 = TS.MulAdd(x6, kb, b6);
            c6 = TS.MulAdd(x6, kc, c6);
            var x7 = TS.Broadcast(q7[d]);
            a7 = TS.MulAdd(x7, ka, a7);
            b7 = TS.MulAdd(x7, kb, b7);
            c7 = TS.MulAdd(x7, kc, c7);
        }

        TS.Store(outA, a0);
        TS.Store(outB, b0);
        TS.Store(outC, c0);
        TS.Store(outA + sStride, a1);
        TS.Store(outB + sStride, b1);
        TS.Store(outC + sStride, c1);
        TS.Store(outA + (2 * sStride), a2);
        TS.Store(outB + (2 * sStride), b2);
        TS.Store(outC + (2 * sStride), c2);
        TS.Store(outA + (3 * sStride), a3);
        TS.Store(outB + (3 * sStride), b3);
        TS.Store(outC + (3 * sStride), c3);
        TS.Store(outA + (4 * sStride), a4);
        TS.Store(outB + (4 * sStride), b4);
        TS.Store(outC + (4 * sStride), c4);
        TS.Store(outA + (5 * sStride), a5);
        TS.Store(outB + (5 * sStride), b5);
        TS.Store(outC + (5 * sStride), c5);
        TS.Store(outA + (6 * sStride), a6);
        TS.Store(outB + (6 * sStride), b6);
        TS.Store(outC + (6 * sStride), c6);
        TS.Store(outA + (7 * sStride), a7);
        TS.Store(outB + (7 * sStride), b7);
        TS.Store(outC + (7 * sStride), c7);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Scores2<TV, TS>(float* rows, nint rowStride, int depth, float* a, float* b, nint stride, float* outA, float* outB, nint sStride)
        where TV : struct
        where TS : struct, ISimdOps<TV>
    {
        TV a0 = TS.Zero, a1 = TS.Zero, a2 = TS.Zero, a3 = TS.Zero, a4 = TS.Zero, a5 = TS.Zero, a6 = TS.Zero, a7 = TS.Zero;
        TV b0 = TS.Zero, b1 = TS.Zero, b2 = TS.Zero, b3 = TS.Zero, b4 = TS.Zero, b5 = TS.Zero, b6 = TS.Zero, b7 = TS.Zero;
        var q0 = rows;
        var q1 = q0 + rowStride;
        var q2 = q1 + rowStride;
        var q3 = q2 + rowStride;
        var q4 = q3 + rowStride;
        var q5 = q4 + rowStride;
        var q6 = q5 + rowStride;
        var q7 = q6 + rowStride;
        for (nint d = 0; d < depth; d++)
        {
            var ka = TS.Load(a);
            var kb = TS.Load(b);
            a += stride;
            b += stride;
            var x = TS.Broadcast(q0[d]);
            a0 = TS.MulAdd(x, ka, a0);
            b0 = TS.MulAdd(x, kb, b0);
            x = TS.Broadcast(q1[d]);
            a1 = TS.MulAdd(x, ka, a1);
            b1 = TS.MulAdd(x, kb, b1);
            x = TS.Broadcast(q2[d]);
            a2 = TS.MulAdd(x, ka, a2);
            b2 = TS.MulAdd(x, kb, b2);
            x = TS.Broadcast(q3[d]);
            a3 = TS.MulAdd(x, ka, a3);
            b3 = TS.MulAdd(x, kb, b3);
            x = TS.Broadcast(q4[d]);
            a4 = TS.MulAdd(x, ka, a4);
            b4 = TS.MulAdd(x, kb, b4);
            x = TS.Broadcast(q5[d]);
            a5 = TS.MulAdd(x, ka, a5);
            b5 = TS.MulAdd(x, kb, b5);
            x = TS.Broadcast(q6[d]);
            a6 = TS.MulAdd(x, ka, a6);
            b6 = TS.MulAdd(x, kb, b6);
            x = TS.Broadcast(q7[d]);
            a7 = TS.MulAdd(x, ka, a7);
            b7 = TS.MulAdd(x, kb, b7);
        }

        TS.Store(outA, a0);
        TS.Store(outB, b0);
        TS.Store(outA + sStride, a1);
        TS.Store(outB + sStride, b1);
        TS.Store(outA + (2 * sStride), a2);
        TS.Store(outB + (2 * sStride), b2);
        TS.Store(outA + (3 * sStride), a3);
        TS.Store(outB + (3 * sStride), b3);
        TS.Store(outA + (4 * sStride), a4);
        TS.Store(outB + (4 * sStride), b4);
        TS.Store(outA + (5 * sStride), a5);
        TS.Store(outB + (5 * sStride), b5);
        TS.Store(outA + (6 * sStride), a6);
        TS.Store(outB + (6 * sStride), b6);
        TS.Store(outA + (7 * sStride), a7);
        TS.Store(outB + (7 * sStride), b7);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Scores1<TV, TS>(float* rows, nint rowStride, int depth, float* a, nint stride, float* outA, nint sStride)
        where TV : struct
        where TS : struct, ISimdOps<TV>
    {
        TV a0 = TS.Zero, a1 = TS.Zero, a2 = TS.Zero, a3 = TS.Zero, a4 = TS.Zero, a5 = TS.Zero, a6 = TS.Zero, a7 = TS.Zero;
        var q0 = rows;
        var q1 = q0 + rowStride;
        var q2 = q1 + rowStride;
        var q3 = q2 + rowStride;
        var q4 = q3 + rowStride;
        var q5 = q4 + rowStride;
        var q6 = q5 + rowStride;
        var q7 = q6 + rowStride;
        for (nint d = 0; d < depth; d++)
        {
            var ka = TS.Load(a);
            a += stride;
            a0 = TS.MulAdd(TS.Broadcast(q0[d]), ka, a0);
            a1 = TS.MulAdd(TS.Broadcast(q1[d]), ka, a1);
            a2 = TS.MulAdd(TS.Broadcast(q2[d]), ka, a2);
            a3 = TS.MulAdd(TS.Broadcast(q3[d]), ka, a3);
            a4 = TS.MulAdd(TS.Broadcast(q4[d]), ka, a4);
            a5 = TS.MulAdd(TS.Broadcast(q5[d]), ka, a5);
            a6 = TS.MulAdd(TS.Broadcast(q6[d]), ka, a6);
            a7 = TS.MulAdd(TS.Broadcast(q7[d]), ka, a7);
        }

        TS.Store(outA, a0);
        TS.Store(outA + sStride, a1);
        TS.Store(outA + (2 * sStride), a2);
        TS.Store(outA + (3 * sStride), a3);
        TS.Store(outA + (4 * sStride), a4);
        TS.Store(outA + (5 * sStride), a5);
        TS.Store(outA + (6 * sStride), a6);
        TS.Store(outA + (7 * sStride), a7);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Accumulate4<TV, TS>(
        float* p, nint pStride, CpuSource* sources, bool second, CpuRun[] runs, int first, int count, int[] ranges,
        int row0, float* acc, nint accStride, int column)
        where TV : struct
        where TS : struct, ISimdOps<TV>
    {
        var w = TS.Width;
        var acc0 = acc + (row0 * accStride);
        var acc1 = acc0 + accStride;
        var acc2 = acc1 + accStride;
        var acc3 = acc2 + accStride;
        TV a0 = TS.Load(acc0), b0 = TS.Load(acc0 + w), c0 = TS.Load(acc0 + (2 * w)), d0 = TS.Load(acc0 + (3 * w));
        TV a1 = TS.Load(acc1), b1 = TS.Load(acc1 + w), c1 = TS.Load(acc1 + (2 * w)), d1 = TS.Load(acc1 + (3 * w));
        TV a2 = TS.Load(acc2), b2 = TS.Load(acc2 + w), c2 = TS.Load(acc2 + (2 * w)), d2 = TS.Load(acc2 + (3 * w));
        TV a3 = TS.Load(acc3), b3 = TS.Load(acc3 + w), c3 = TS.Load(acc3 + (2 * w)), d3 = TS.Load(acc3 + (3 * w));
        for (var i = first; i < first + count; i++)
        {
            ref var run = ref runs[i];
            var source = sources + run.Source;
            var stride = second ? source->Rows2Stride : source->RowsStride;
            var v = (second ? source->Rows2 : source->Rows) + (run.RowColumn * stride) + column;
            var p0 = p + (row0 * pStride) + run.ScoreColumn;
            var p1 = p0 + pStride;
            var p2 = p1 + pStride;
            var p3 = p2 + pStride;
            int lo0 = ranges[CpuBlock.Lo(run.RangeSet, row0)], hi0 = ranges[CpuBlock.Hi(run.RangeSet, row0)];
            int lo1 = ranges[CpuBlock.Lo(run.RangeSet, row0 + 1)], hi1 = ranges[CpuBlock.Hi(run.RangeSet, row0 + 1)];
            int lo2 = ranges[CpuBlock.Lo(run.RangeSet, row0 + 2)], hi2 = ranges[CpuBlock.Hi(run.RangeSet, row0 + 2)];
            int lo3 = ranges[CpuBlock.Lo(run.RangeSet, row0 + 3)], hi3 = ranges[CpuBlock.Hi(run.RangeSet, row0 + 3)];
            var shared0 = Math.Max(Math.Max(lo0, lo1), Math.Max(lo2, lo3));
            var shared1 = Math.Min(Math.Min(hi0, hi1), Math.Min(hi2, hi3));
            if (shared0 < shared1)
            {
                var vc = v + (shared0 * stride);
                for (var c = shared0; c < shared1; c++)
                {
                    var x = TS.Load(vc);
                    var y = TS.Load(vc + w);
                    var z = TS.Load(vc + (2 * w));
                    var u = TS.Load(vc + (3 * w));
                    vc += stride;
                    var q0 = TS.Broadcast(p0[c]);
                    a0 = TS.MulAdd(q0, x, a0);
                    b0 = TS.MulAdd(q0, y, b0);
                    c0 = TS.MulAdd(q0, z, c0);
                    d0 = TS.MulAdd(q0, u, d0);
                    var q1 = TS.Broadcast(p1[c]);
                    a1 = TS.MulAdd(q1, x, a1);
                    b1 = TS.MulAdd(q1, y, b1);
                    c1 = TS.MulAdd(q1, z, c1);
                    d1 = TS.MulAdd(q1, u, d1);
                    var q2 = TS.Broadcast(p2[c]);
                    a2 = TS.MulAdd(q2, x, a2);
                    b2 = TS.MulAdd(q2, y, b2);
                    c2 = TS.MulAdd(q2, z, c2);
                    d2 = TS.MulAdd(q2, u, d2);
                    var q3 = TS.Broadcast(p3[c]);
                    a3 = TS.MulAdd(q3, x, a3);
                    b3 = TS.MulAdd(q3, y, b3);
                    c3 = TS.MulAdd(q3, z, c3);
                    d3 = TS.MulAdd(q3, u, d3);
                }

                Edge4<TV, TS>(ref a0, ref b0, ref c0, ref d0, p0, v, stride, lo0, shared0);
                Edge4<TV, TS>(ref a0, ref b0, ref c0, ref d0, p0, v, stride, shared1, hi0);
                Edge4<TV, TS>(ref a1, ref b1, ref c1, ref d1, p1, v, stride, lo1, shared0);
                Edge4<TV, TS>(ref a1, ref b1, ref c1, ref d1, p1, v, stride, shared1, hi1);
                Edge4<TV, TS>(ref a2, ref b2, ref c2, ref d2, p2, v, stride, lo2, shared0);
                Edge4<TV, TS>(ref a2, ref b2, ref c2, ref d2, p2, v, stride, shared1, hi2);
                Edge4<TV, TS>(ref a3, ref b3, ref c3, ref d3, p3, v, stride, lo3, shared0);
                Edge4<TV, TS>(ref a3, ref b3, ref c3, ref d3, p3, v, stride, shared1, hi3);
            }
            else
            {
                Edge4<TV, TS>(ref a0, ref b0, ref c0, ref d0, p0, v, stride, lo0, hi0);
                Edge4<TV, TS>(ref a1, ref b1, ref c1, ref d1, p1, v, stride, lo1, hi1);
                Edge4<TV, TS>(ref a2, ref b2, ref c2, ref d2, p2, v, stride, lo2, hi2);
                Edge4<TV, TS>(ref a3, ref b3, ref c3, ref d3, p3, v, stride, lo3, hi3);
            }
        }

        TS.Store(acc0, a0);
        TS.Store(acc0 + w, b0);
        TS.Store(acc0 + (2 * w), c0);
        TS.Store(acc0 + (3 * w), d0);
        TS.Store(acc1, a1);
        TS.Store(acc1 + w, b1);
        TS.Store(acc1 + (2 * w), c1);
        TS.Store(acc1 + (3 * w), d1);
        TS.Store(acc2, a2);
        TS.Store(acc2 + w, b2);
        TS.Store(acc2 + (2 * w), c2);
        TS.Store(acc2 + (3 * w), d2);
        TS.Store(acc3, a3);
        TS.Store(acc3 + w, b3);
        TS.Store(acc3 + (2 * w), c3);
        TS.Store(acc3 + (3 * w), d3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Edge4<TV, TS>(ref TV a, ref TV b, ref TV c, ref TV d, float* p, float* v, nint stride, int from, int to)
        where TV : struct
        where TS : struct, ISimdOps<TV>
    {
        var w = TS.Width;
        var vc = v + (from * stride);
        for (var i = from; i < to; i++)
        {
            var q = TS.Broadcast(p[i]);
            a = TS.MulAdd(q, TS.Load(vc), a);
            b = TS.MulAdd(q, TS.Load(vc + w), b);
            c = TS.MulAdd(q, TS.Load(vc + (2 * w)), c);
            d = TS.MulAdd(q, TS.Load(vc + (3 * w)), d);
            vc += stride;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Accumulate2<TV, TS>(
        float* p, nint pStride, CpuSource* sources, bool second, CpuRun[] runs, int first, int count, int[] ranges,
        int row0, float* acc, nint accStride, int column)
        where TV : struct
        where TS : struct, ISimdOps<TV>
    {
        var w = TS.Width;
        var acc0 = acc + (row0 * accStride);
        var acc1 = acc0 + accStride;
        var acc2 = acc1 + accStride;
        var acc3 = acc2 + accStride;
        TV a0 = TS.Load(acc0), b0 = TS.Load(acc0 + w);
        TV a1 = TS.Load(acc1), b1 = TS.Load(acc1 + w);
        TV a2 = TS.Load(acc2), b2 = TS.Load(acc2 + w);
        TV a3 = TS.Load(acc3), b3 = TS.Load(acc3 + w);
        for (var i = first; i < first + count; i++)
        {
            ref var run = ref runs[i];
            var source = sources + run.Source;
            var stride = second ? source->Rows2Stride : source->RowsStride;
            var v = (second ? source->Rows2 : source->Rows) + (run.RowColumn * stride) + column;
            var p0 = p + (row0 * pStride) + run.ScoreColumn;
            var p1 = p0 + pStride;
            var p2 = p1 + pStride;
            var p3 = p2 + pStride;
            int lo0 = ranges[CpuBlock.Lo(run.RangeSet, row0)], hi0 = ranges[CpuBlock.Hi(run.RangeSet, row0)];
            int lo1 = ranges[CpuBlock.Lo(run.RangeSet, row0 + 1)], hi1 = ranges[CpuBlock.Hi(run.RangeSet, row0 + 1)];
            int lo2 = ranges[CpuBlock.Lo(run.RangeSet, row0 + 2)], hi2 = ranges[CpuBlock.Hi(run.RangeSet, row0 + 2)];
            int lo3 = ranges[CpuBlock.Lo(run.RangeSet, row0 + 3)], hi3 = ranges[CpuBlock.Hi(run.RangeSet, row0 + 3)];
            var shared0 = Math.Max(Math.Max(lo0, lo1), Math.Max(lo2, lo3));
            var shared1 = Math.Min(Math.Min(hi0, hi1), Math.Min(hi2, hi3));
            if (shared0 < shared1)
            {
                var vc = v + (shared0 * stride);
                for (var c = shared0; c < shared1; c++)
                {
                    var x = TS.Load(vc);
                    var y = TS.Load(vc + w);
                    vc += stride;
                    var q = TS.Broadcast(p0[c]);
                    a0 = TS.MulAdd(q, x, a0);
                    b0 = TS.MulAdd(q, y, b0);
                    q = TS.Broadcast(p1[c]);
                    a1 = TS.MulAdd(q, x, a1);
                    b1 = TS.MulAdd(q, y, b1);
                    q = TS.Broadcast(p2[c]);
                    a2 = TS.MulAdd(q, x, a2);
                    b2 = TS.MulAdd(q, y, b2);
                    q = TS.Broadcast(p3[c]);
                    a3 = TS.MulAdd(q, x, a3);
                    b3 = TS.MulAdd(q, y, b3);
                }

                Edge2<TV, TS>(ref a0, ref b0, p0, v, stride, lo0, shared0);
                Edge2<TV, TS>(ref a0, ref b0, p0, v, stride, shared1, hi0);
                Edge2<TV, TS>(ref a1, ref b1, p1, v, stride, lo1, shared0);
                Edge2<TV, TS>(ref a1, ref b1, p1, v, stride, shared1, hi1);
                Edge2<TV, TS>(ref a2, ref b2, p2, v, stride, lo2, shared0);
                Edge2<TV, TS>(ref a2, ref b2, p2, v, stride, shared1, hi2);
                Edge2<TV, TS>(ref a3, ref b3, p3, v, stride, lo3, shared0);
                Edge2<TV, TS>(ref a3, ref b3, p3, v, stride, shared1, hi3);
            }
            else
            {
                Edge2<TV, TS>(ref a0, ref b0, p0, v, stride, lo0, hi0);
                Edge2<TV, TS>(ref a1, ref b1, p1, v, stride, lo1, hi1);
                Edge2<TV, TS>(ref a2, ref b2, p2, v, stride, lo2, hi2);
                Edge2<TV, TS>(ref a3, ref b3, p3, v, stride, lo3, hi3);
            }
        }

        TS.Store(acc0, a0);
        TS.Store(acc0 + w, b0);
        TS.Store(acc1, a1);
        TS.Store(acc1 + w, b1);
        TS.Store(acc2, a2);
        TS.Store(acc2 + w, b2);
        TS.Store(acc3, a3);
        TS.Store(acc3 + w, b3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Edge2<TV, TS>(ref TV a, ref TV b, float* p, float* v, nint stride, int from, int to)
        where TV : struct
        where TS : struct, ISimdOps<TV>
    {
        var w = TS.Width;
        var vc = v + (from * stride);
        for (var c = from; c < to; c++)
        {
            var q = TS.Broadcast(p[c]);
            a = TS.MulAdd(q, TS.Load(vc), a);
            b = TS.MulAdd(q, TS.Load(vc + w), b);
            vc += stride;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Accumulate1<TV, TS>(
        float* p, nint pStride, CpuSource* sources, bool second, CpuRun[] runs, int first, int count, int[] ranges,
        int row0, float* acc, nint accStride, int column)
        where TV : struct
        where TS : struct, ISimdOps<TV>
    {
        var acc0 = acc + (row0 * accStride);
        var acc1 = acc0 + accStride;
        var acc2 = acc1 + accStride;
        var acc3 = acc2 + accStride;
        TV a0 = TS.Load(acc0), a1 = TS.Load(acc1), a2 = TS.Load(acc2), a3 = TS.Load(acc3);
        for (var i = first; i < first + count; i++)
        {
            ref var run = ref runs[i];
            var source = sources + run.Source;
            var stride = second ? source->Rows2Stride : source->RowsStride;
            var v = (second ? source->Rows2 : source->Rows) + (run.RowColumn * stride) + column;
            var p0 = p + (row0 * pStride) + run.ScoreColumn;
            var p1 = p0 + pStride;
            var p2 = p1 + pStride;
            var p3 = p2 + pStride;
            int lo0 = ranges[CpuBlock.Lo(run.RangeSet, row0)], hi0 = ranges[CpuBlock.Hi(run.RangeSet, row0)];
            int lo1 = ranges[CpuBlock.Lo(run.RangeSet, row0 + 1)], hi1 = ranges[CpuBlock.Hi(run.RangeSet, row0 + 1)];
            int lo2 = ranges[CpuBlock.Lo(run.RangeSet, row0 + 2)], hi2 = ranges[CpuBlock.Hi(run.RangeSet, row0 + 2)];
            int lo3 = ranges[CpuBlock.Lo(run.RangeSet, row0 + 3)], hi3 = ranges[CpuBlock.Hi(run.RangeSet, row0 + 3)];
            var shared0 = Math.Max(Math.Max(lo0, lo1), Math.Max(lo2, lo3));
            var shared1 = Math.Min(Math.Min(hi0, hi1), Math.Min(hi2, hi3));
            if (shared0 < shared1)
            {
                var vc = v + (shared0 * stride);
                for (var c = shared0; c < shared1; c++)
                {
                    var x = TS.Load(vc);
                    vc += stride;
                    a0 = TS.MulAdd(TS.Broadcast(p0[c]), x, a0);
                    a1 = TS.MulAdd(TS.Broadcast(p1[c]), x, a1);
                    a2 = TS.MulAdd(TS.Broadcast(p2[c]), x, a2);
                    a3 = TS.MulAdd(TS.Broadcast(p3[c]), x, a3);
                }

                Edge1<TV, TS>(ref a0, p0, v, stride, lo0, shared0);
                Edge1<TV, TS>(ref a0, p0, v, stride, shared1, hi0);
                Edge1<TV, TS>(ref a1, p1, v, stride, lo1, shared0);
                Edge1<TV, TS>(ref a1, p1, v, stride, shared1, hi1);
                Edge1<TV, TS>(ref a2, p2, v, stride, lo2, shared0);
                Edge1<TV, TS>(ref a2, p2, v, stride, shared1, hi2);
                Edge1<TV, TS>(ref a3, p3, v, stride, lo3, shared0);
                Edge1<TV, TS>(ref a3, p3, v, stride, shared1, hi3);
            }
            else
            {
                Edge1<TV, TS>(ref a0, p0, v, stride, lo0, hi0);
                Edge1<TV, TS>(ref a1, p1, v, stride, lo1, hi1);
                Edge1<TV, TS>(ref a2, p2, v, stride, lo2, hi2);
                Edge1<TV, TS>(ref a3, p3, v, stride, lo3, hi3);
            }
        }

        TS.Store(acc0, a0);
        TS.Store(acc1, a1);
        TS.Store(acc2, a2);
        TS.Store(acc3, a3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Edge1<TV, TS>(ref TV a, float* p, float* v, nint stride, int from, int to)
        where TV : struct
        where TS : struct, ISimdOps<TV>
    {
        var vc = v + (from * stride);
        for (var c = from; c < to; c++)
        {
            a = TS.MulAdd(TS.Broadcast(p[c]), TS.Load(vc), a);
            vc += stride;
        }
    }
}
