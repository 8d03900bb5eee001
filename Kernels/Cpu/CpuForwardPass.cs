using System.Runtime.CompilerServices;

namespace Natten.Kernels.Cpu;

/// <summary>
/// The fused forward over one tile task (batch, KV head, query tile): the tile's key/value union is
/// gathered once (keys transposed, values as rows) and reused by every query head of the KV head's
/// group and every block of the tile; per block, scores for 8 queries, masked per query, an online
/// softmax over chunks of runs, and the weighted values accumulated over each query's own window.
/// </summary>
internal sealed unsafe class CpuForwardPass<TV, TS>
    where TV : struct
    where TS : struct, ISimdOps<TV>
{
    private const int BufferKeys = 0;
    private const int BufferValues = 1;
    private const int BufferQueries = 2;
    private const int BufferScores = 3;
    private const int BufferOutput = 4;

    private readonly CpuLayout _layout;
    private readonly CpuTilePlan _plan;
    private readonly float* _query;
    private readonly float* _keyT;
    private readonly float* _value;
    private readonly float* _additionalT;
    private readonly float* _additionalRows;
    private readonly float* _output;
    private readonly float* _lse;
    private readonly nint _columnStride;
    private readonly int _scoreStride;

    public CpuForwardPass(
        CpuLayout layout, CpuTilePlan plan, float* query, float* keyT, float* value, float* additionalT, float* additionalRows,
        float* output, float* lse)
    {
        _layout = layout;
        _plan = plan;
        _query = query;
        _keyT = keyT;
        _value = value;
        _additionalT = additionalT;
        _additionalRows = additionalRows;
        _output = output;
        _lse = lse;
        _columnStride = layout.ColumnStride(plan.MaxColumns);
        _scoreStride = ScoreStride(layout, plan);
    }

    public long TaskCount => (long)_layout.P.Batch * _layout.P.KvHeads * _plan.Tiles.Length;

    /// <summary>Floats per row of a block's score buffer: room for the longest run, and about 16 KiB for all 8 rows.</summary>
    public static int ScoreStride(CpuLayout layout, CpuTilePlan plan)
        => Math.Max(512, Math.Max(CpuLayout.RoundUp(plan.MaxLastColumns, layout.Width) + layout.Width, layout.AdditionalPadded));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Run(long task, CpuWorkspace ws)
    {
        var layout = _layout;
        var p = layout.P;
        var tiles = _plan.Tiles;
        var tile = tiles[(int)(task % tiles.Length)];
        var bk = task / tiles.Length;
        var kvHead = (int)(bk % p.KvHeads);
        var b = (int)(bk / p.KvHeads);
        var dvp = layout.ValueDimPadded;

        var bh = ((long)b * p.KvHeads) + kvHead;
        var sources = stackalloc CpuSource[2];
        if (layout.ColumnsInPlace)
        {
            sources[0].Transposed = _keyT + (bh * p.HeadDim * layout.TransposedStride);
            sources[0].TransposedStride = (nint)layout.TransposedStride;
        }
        else
        {
            var keys = ws.Buffer(BufferKeys, p.HeadDim * _columnStride);
            layout.GatherTransposed(tile, _keyT + (bh * p.HeadDim * layout.TransposedStride), p.HeadDim, keys, _columnStride);
            sources[0].Transposed = keys;
            sources[0].TransposedStride = _columnStride;
        }

        if (layout.RowsInPlace(p.ValueDim))
        {
            sources[0].Rows = _value + (((b * layout.Tokens * p.KvHeads) + kvHead) * p.ValueDim);
            sources[0].RowsStride = (nint)p.KvHeads * p.ValueDim;
        }
        else
        {
            var values = ws.Buffer(BufferValues, ((long)_plan.MaxColumns * dvp) + dvp);
            layout.GatherRows(tile, _value + ((((long)b * layout.Tokens * p.KvHeads) + kvHead) * p.ValueDim), p.KvHeads, p.ValueDim, values, dvp);
            sources[0].Rows = values;
            sources[0].RowsStride = dvp;
        }

        if (p.AdditionalTokens > 0)
        {
            sources[1] = new CpuSource
            {
                Transposed = _additionalT + (bh * p.HeadDim * layout.AdditionalPadded),
                TransposedStride = layout.AdditionalPadded,
                Rows = _additionalRows + (bh * p.AdditionalTokens * dvp),
                RowsStride = dvp,
            };
        }

        var queries = ws.Buffer(BufferQueries, p.HeadDim * CpuBlock.Rows);
        var scores = ws.Buffer(BufferScores, CpuBlock.Rows * _scoreStride);
        var output = ws.Buffer(BufferOutput, CpuBlock.Rows * dvp);
        for (var h = kvHead * layout.Group; h < (kvHead + 1) * layout.Group; h++)
        {
            for (var x0 = tile.Row0; x0 < tile.Row0 + tile.Rows0; x0++)
            {
                for (var x1 = tile.Row1; x1 < tile.Row1 + tile.Rows1; x1++)
                {
                    for (var x2 = tile.Row2; x2 < tile.Row2 + tile.Rows2; x2 += CpuBlock.Rows)
                    {
                        var rows = Math.Min(CpuBlock.Rows, tile.Row2 + tile.Rows2 - x2);
                        Block(ws, tile, b, h, x0, x1, x2, rows, sources, queries, scores, output);
                    }
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Block(
        CpuWorkspace ws, in CpuTile tile, int b, int h, int x0, int x1, int x2, int rows, CpuSource* sources,
        float* queries, float* scores, float* output)
    {
        var layout = _layout;
        var p = layout.P;
        var w = TS.Width;
        var dvp = layout.ValueDimPadded;
        var runCount = layout.BuildBlock(
            ws, tile, x0, x1, x2, rows, inverse: false, p.AdditionalTokens, layout.ColumnsInPlace, layout.RowsInPlace(p.ValueDim));
        var runs = ws.Runs;
        var ranges = ws.Ranges;

        var firstRow = (((b * layout.Tokens) + layout.Token(tile, x0, x1, x2)) * p.Heads) + h;
        var rowsPointer = CpuLayout.BlockRows(
            _query + (firstRow * p.HeadDim), (nint)p.D2 * p.Heads * p.HeadDim, rows, p.HeadDim, queries, out var rowStride);

        new Span<float>(output, CpuBlock.Rows * dvp).Clear();
        var max = stackalloc float[CpuBlock.Rows];
        var sum = stackalloc float[CpuBlock.Rows];
        for (var r = 0; r < CpuBlock.Rows; r++)
        {
            max[r] = float.NegativeInfinity;
            sum[r] = 0;
        }

        for (var first = 0; first < runCount;)
        {
            var count = layout.NextChunk(runs, first, runCount, _scoreStride);
            CpuMicroKernels.Scores<TV, TS>(rowsPointer, rowStride, p.HeadDim, false, sources, runs, first, count, scores, _scoreStride);
            for (var r = 0; r < rows; r++)
            {
                Softmax(scores + (r * _scoreStride), runs, first, count, ranges, r, p.Scale, ref max[r], ref sum[r], output + (r * dvp), dvp);
            }

            CpuMicroKernels.Accumulate<TV, TS>(scores, _scoreStride, sources, false, runs, first, count, ranges, 0, output, dvp, dvp);
            if (rows > 4)
            {
                CpuMicroKernels.Accumulate<TV, TS>(scores, _scoreStride, sources, false, runs, first, count, ranges, 4, output, dvp, dvp);
            }

            first += count;
        }

        for (var r = 0; r < rows; r++)
        {
            var row = firstRow + ((long)r * p.D2 * p.Heads);
            var o = _output + (row * p.ValueDim);
            var acc = output + (r * dvp);
            var l = sum[r];
            if (l == 0)
            {
                // No allowed key (not possible in plain NA): output 0 and LSE -inf, never NaN.
                new Span<float>(o, p.ValueDim).Clear();
            }
            else
            {
                var inverse = 1 / l;
                var c = 0;
                var scale = TS.Broadcast(inverse);
                for (; c + w <= p.ValueDim; c += w)
                {
                    TS.Store(o + c, TS.Multiply(TS.Load(acc + c), scale));
                }

                for (; c < p.ValueDim; c++)
                {
                    o[c] = acc[c] * inverse;
                }
            }

            if (_lse is not null)
            {
                _lse[row] = l == 0 ? float.NegativeInfinity : max[r] + MathF.Log(l);
            }
        }
    }

    /// <summary>
    /// One row's online-softmax step over a chunk of unscaled scores: masks positions outside the row's
    /// ranges to -∞, raises the running max of scale·s (rescaling the sum and the accumulated output),
    /// and turns the scores into exp(scale·s − max) in place.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Softmax(
        float* s, CpuRun[] runs, int first, int count, int[] ranges, int r, float scale, ref float max, ref float sum, float* acc, int dvp)
    {
        var w = TS.Width;
        var negativeInfinity = TS.Broadcast(float.NegativeInfinity);
        var runMax = negativeInfinity;
        for (var i = first; i < first + count; i++)
        {
            ref var run = ref runs[i];
            var lo = ranges[CpuBlock.Lo(run.RangeSet, r)];
            var hi = ranges[CpuBlock.Hi(run.RangeSet, r)];
            var row = s + run.ScoreColumn;
            for (var v = 0; v < run.Vectors; v++)
            {
                var start = v * w;
                TV x;
                if (start >= lo && start + w <= hi)
                {
                    x = TS.Load(row + start);
                }
                else if (start + w <= lo || start >= hi)
                {
                    x = negativeInfinity;
                    TS.Store(row + start, x);
                }
                else
                {
                    x = TS.KeepLanes(TS.Load(row + start), lo - start, hi - start, float.NegativeInfinity);
                    TS.Store(row + start, x);
                }

                runMax = TS.Max(runMax, x);
            }
        }

        // scale > 0, so max(scale·s) = scale·max(s), rounding included.
        var newMax = MathF.Max(max, scale * TS.MaxAcross(runMax));
        if (newMax == float.NegativeInfinity)
        {
            // Nothing allowed so far in this row: weights 0.
            for (var i = first; i < first + count; i++)
            {
                new Span<float>(s + runs[i].ScoreColumn, runs[i].Vectors * w).Clear();
            }

            return;
        }

        if (newMax > max && max != float.NegativeInfinity)
        {
            var correction = MathF.Exp(max - newMax);
            sum *= correction;
            var rescale = TS.Broadcast(correction);
            for (var c = 0; c < dvp; c += w)
            {
                TS.Store(acc + c, TS.Multiply(TS.Load(acc + c), rescale));
            }
        }

        max = newMax;
        var shift = TS.Broadcast(-newMax);
        var factor = TS.Broadcast(scale);
        var total = TS.Zero;
        for (var i = first; i < first + count; i++)
        {
            ref var run = ref runs[i];
            var row = s + run.ScoreColumn;
            for (var v = 0; v < run.Vectors; v++)
            {
                var e = TS.Exp(TS.MulAdd(TS.Load(row + (v * w)), factor, shift));
                TS.Store(row + (v * w), e);
                total = TS.Add(total, e);
            }
        }

        sum += TS.Sum(total);
    }
}
