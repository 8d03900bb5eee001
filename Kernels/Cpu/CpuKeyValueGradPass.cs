using System.Runtime.CompilerServices;

namespace Natten.Kernels.Cpu;

/// <summary>
/// dK and dV over key tiles, using the inverse neighborhood: a tile's columns are the union of the
/// queries that see its keys (per axis, <see cref="GroupWindows.QueryStart"/> to
/// <see cref="GroupWindows.QueryEnd"/>). Per block of 8 keys and query head of the group,
/// Pᵀ = exp(scale·k·q − LSE_q) and dPᵀ = v·dO over the runs, dSᵀ = Pᵀ ∘ (dPᵀ − Δ_q);
/// dV += Pᵀ·dO and dK += scale · dSᵀ·q over each key's own queries. Each key's gradient is owned by one
/// task, which sums the group's heads in order: deterministic, no atomics.
/// </summary>
internal sealed unsafe class CpuKeyValueGradPass<TV, TS>
    where TV : struct
    where TS : struct, ISimdOps<TV>
{
    private const int BufferQueriesT = 0;
    private const int BufferOutputGradsT = 1;
    private const int BufferOutputGradRows = 2;
    private const int BufferQueryRows = 3;
    private const int BufferLse = 4;
    private const int BufferDelta = 5;
    private const int BufferKeys = 6;
    private const int BufferValues = 7;
    private const int BufferScores = 8;
    private const int BufferGradScores = 9;
    private const int BufferKeyGrads = 10;
    private const int BufferValueGrads = 11;

    private readonly CpuLayout _layout;
    private readonly CpuTilePlan _plan;
    private readonly CpuBackwardTensors _t;
    private readonly float* _value;
    private readonly nint _columnStride;
    private readonly int _scoreStride;

    public CpuKeyValueGradPass(CpuLayout layout, CpuTilePlan plan, in CpuBackwardTensors tensors, float* value)
    {
        _layout = layout;
        _plan = plan;
        _t = tensors;
        _value = value;
        _columnStride = layout.ColumnStride(plan.MaxColumns);
        _scoreStride = CpuForwardPass<TV, TS>.ScoreStride(layout, plan);
    }

    public long TaskCount => (long)_layout.P.Batch * _layout.P.KvHeads * _plan.Tiles.Length;

    /// <summary>dO and Q rows are read in place only together: the runs carry one row index for both.</summary>
    private bool RowsInPlace => _layout.RowsInPlace(_layout.P.ValueDim) && _layout.RowsInPlace(_layout.P.HeadDim);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Run(long task, CpuWorkspace ws)
    {
        var layout = _layout;
        var p = layout.P;
        var dp = layout.HeadDimPadded;
        var dvp = layout.ValueDimPadded;
        var tiles = _plan.Tiles;
        var tile = tiles[(int)(task % tiles.Length)];
        var bk = task / tiles.Length;
        var kvHead = (int)(bk % p.KvHeads);
        var b = (int)(bk / p.KvHeads);

        var keys = ws.Buffer(BufferKeys, p.HeadDim * CpuBlock.Rows);
        var values = ws.Buffer(BufferValues, p.ValueDim * CpuBlock.Rows);
        var scores = ws.Buffer(BufferScores, CpuBlock.Rows * _scoreStride);
        var gradScores = ws.Buffer(BufferGradScores, CpuBlock.Rows * _scoreStride);
        var accRows = tile.RowCount + CpuBlock.Rows;
        var keyGrads = ws.ZeroedBuffer(BufferKeyGrads, (long)accRows * dp);
        var valueGrads = ws.ZeroedBuffer(BufferValueGrads, (long)accRows * dvp);
        var columnsInPlace = layout.ColumnsInPlace;
        var rowsInPlace = RowsInPlace;
        var sources = stackalloc CpuSource[1];

        if (tile.ColumnCount > 0)
        {
            for (var h = kvHead * layout.Group; h < (kvHead + 1) * layout.Group; h++)
            {
                var bh = ((long)b * p.Heads) + h;
                var stride = layout.TransposedStride;
                var queryT = _t.QueryT + (bh * p.HeadDim * stride);
                var gradT = _t.OutputGradT + (bh * p.ValueDim * stride);
                var grad = _t.OutputGrad + (((b * layout.Tokens * p.Heads) + h) * p.ValueDim);
                var query = _t.Query + (((b * layout.Tokens * p.Heads) + h) * p.HeadDim);
                if (columnsInPlace)
                {
                    sources[0].Transposed = queryT;
                    sources[0].TransposedStride = (nint)stride;
                    sources[0].Transposed2 = gradT;
                    sources[0].Transposed2Stride = (nint)stride;
                    sources[0].Lse = _t.LseT + (bh * layout.Tokens);
                    sources[0].Delta = _t.DeltaT + (bh * layout.Tokens);
                }
                else
                {
                    var queriesT = ws.Buffer(BufferQueriesT, p.HeadDim * _columnStride);
                    var gradsT = ws.Buffer(BufferOutputGradsT, p.ValueDim * _columnStride);
                    var lse = ws.Buffer(BufferLse, _columnStride);
                    var delta = ws.Buffer(BufferDelta, _columnStride);
                    layout.GatherTransposed(tile, queryT, p.HeadDim, queriesT, _columnStride);
                    layout.GatherTransposed(tile, gradT, p.ValueDim, gradsT, _columnStride);
                    layout.GatherScalars(tile, _t.LseT + (bh * layout.Tokens), lse);
                    layout.GatherScalars(tile, _t.DeltaT + (bh * layout.Tokens), delta);
                    sources[0].Transposed = queriesT;
                    sources[0].TransposedStride = _columnStride;
                    sources[0].Transposed2 = gradsT;
                    sources[0].Transposed2Stride = _columnStride;
                    sources[0].Lse = lse;
                    sources[0].Delta = delta;
                }

                if (rowsInPlace)
                {
                    sources[0].Rows = grad;
                    sources[0].RowsStride = (nint)p.Heads * p.ValueDim;
                }
                else
                {
                    var gradRows = ws.Buffer(BufferOutputGradRows, ((long)_plan.MaxColumns * dvp) + dvp);
                    layout.GatherRows(tile, grad, p.Heads, p.ValueDim, gradRows, dvp);
                    sources[0].Rows = gradRows;
                    sources[0].RowsStride = dvp;
                }

                if (rowsInPlace)
                {
                    sources[0].Rows2 = query;
                    sources[0].Rows2Stride = (nint)p.Heads * p.HeadDim;
                }
                else
                {
                    var queryRows = ws.Buffer(BufferQueryRows, ((long)_plan.MaxColumns * dp) + dp);
                    layout.GatherRows(tile, query, p.Heads, p.HeadDim, queryRows, dp);
                    sources[0].Rows2 = queryRows;
                    sources[0].Rows2Stride = dp;
                }

                var row = 0;
                for (var x0 = tile.Row0; x0 < tile.Row0 + tile.Rows0; x0++)
                {
                    for (var x1 = tile.Row1; x1 < tile.Row1 + tile.Rows1; x1++)
                    {
                        for (var x2 = tile.Row2; x2 < tile.Row2 + tile.Rows2; x2 += CpuBlock.Rows)
                        {
                            var rows = Math.Min(CpuBlock.Rows, tile.Row2 + tile.Rows2 - x2);
                            Block(
                                ws, tile, b, kvHead, x0, x1, x2, rows, sources, keys, values, scores, gradScores,
                                keyGrads + ((long)row * dp), valueGrads + ((long)row * dvp));
                            row += rows;
                        }
                    }
                }
            }
        }

        var stored = 0;
        for (var x0 = tile.Row0; x0 < tile.Row0 + tile.Rows0; x0++)
        {
            for (var x1 = tile.Row1; x1 < tile.Row1 + tile.Rows1; x1++)
            {
                for (var x2 = tile.Row2; x2 < tile.Row2 + tile.Rows2; x2++)
                {
                    var key = (((b * layout.Tokens) + layout.Token(tile, x0, x1, x2)) * p.KvHeads) + kvHead;
                    CpuQueryGradPass<TV, TS>.Store(keyGrads + ((long)stored * dp), _t.KeyGrad + (key * p.HeadDim), p.HeadDim, p.Scale);
                    CpuQueryGradPass<TV, TS>.Store(valueGrads + ((long)stored * dvp), _t.ValueGrad + (key * p.ValueDim), p.ValueDim, 1);
                    stored++;
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Block(
        CpuWorkspace ws, in CpuTile tile, int b, int kvHead, int x0, int x1, int x2, int rows, CpuSource* sources,
        float* keys, float* values, float* scores, float* gradScores, float* keyGrads, float* valueGrads)
    {
        var layout = _layout;
        var p = layout.P;
        var w = TS.Width;
        var runCount = layout.BuildBlock(
            ws, tile, x0, x1, x2, rows, inverse: true, additional: 0, layout.ColumnsInPlace, RowsInPlace);
        if (runCount == 0)
        {
            return;
        }

        var runs = ws.Runs;
        var ranges = ws.Ranges;
        var firstRow = (((b * layout.Tokens) + layout.Token(tile, x0, x1, x2)) * p.KvHeads) + kvHead;
        var rowStep = (long)p.D2 * p.KvHeads;
        var keyRows = CpuLayout.BlockRows(_t.Key + (firstRow * p.HeadDim), (nint)(rowStep * p.HeadDim), rows, p.HeadDim, keys, out var keyStride);
        var valueRows = CpuLayout.BlockRows(_value + (firstRow * p.ValueDim), (nint)(rowStep * p.ValueDim), rows, p.ValueDim, values, out var valueStride);

        var lse = sources[0].Lse;
        var delta = sources[0].Delta;
        for (var first = 0; first < runCount;)
        {
            var count = layout.NextChunk(runs, first, runCount, _scoreStride);
            CpuMicroKernels.Scores<TV, TS>(keyRows, keyStride, p.HeadDim, false, sources, runs, first, count, scores, _scoreStride);
            CpuMicroKernels.Scores<TV, TS>(valueRows, valueStride, p.ValueDim, true, sources, runs, first, count, gradScores, _scoreStride);
            var factor = TS.Broadcast(p.Scale);
            for (var r = 0; r < rows; r++)
            {
                var s = scores + (r * _scoreStride);
                var g = gradScores + (r * _scoreStride);
                for (var i = first; i < first + count; i++)
                {
                    var column = runs[i].Column;
                    var score = runs[i].ScoreColumn;
                    for (var v = 0; v < runs[i].Vectors * w; v += w)
                    {
                        var prob = TS.Exp(TS.Subtract(TS.Multiply(TS.Load(s + score + v), factor), TS.Load(lse + column + v)));
                        TS.Store(s + score + v, prob);
                        TS.Store(g + score + v, TS.Multiply(prob, TS.Subtract(TS.Load(g + score + v), TS.Load(delta + column + v))));
                    }
                }
            }

            var dp = layout.HeadDimPadded;
            var dvp = layout.ValueDimPadded;
            CpuMicroKernels.Accumulate<TV, TS>(scores, _scoreStride, sources, false, runs, first, count, ranges, 0, valueGrads, dvp, dvp);
            CpuMicroKernels.Accumulate<TV, TS>(gradScores, _scoreStride, sources, true, runs, first, count, ranges, 0, keyGrads, dp, dp);
            if (rows > 4)
            {
                CpuMicroKernels.Accumulate<TV, TS>(scores, _scoreStride, sources, false, runs, first, count, ranges, 4, valueGrads, dvp, dvp);
                CpuMicroKernels.Accumulate<TV, TS>(gradScores, _scoreStride, sources, true, runs, first, count, ranges, 4, keyGrads, dp, dp);
            }

            first += count;
        }
    }
}
