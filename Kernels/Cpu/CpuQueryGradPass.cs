using System.Runtime.CompilerServices;

namespace Natten.Kernels.Cpu;

/// <summary>
/// dQ (and the additional tokens' partial gradients) over query tiles, laid out like the forward:
/// per block, P = exp(scale·q·k − LSE) and dP = dO·v over the block's runs, dS = P ∘ (dP − Δ), and
/// dQ = scale · Σ dS·k over each query's own keys. The additional tokens' dK and dV are summed per
/// task into a slot of a workspace and reduced in a fixed order afterwards (no atomics).
/// </summary>
internal sealed unsafe class CpuQueryGradPass<TV, TS>
    where TV : struct
    where TS : struct, ISimdOps<TV>
{
    private const int BufferKeysT = 0;
    private const int BufferValuesT = 1;
    private const int BufferKeyRows = 2;
    private const int BufferQueries = 3;
    private const int BufferOutputGrads = 4;
    private const int BufferScores = 5;
    private const int BufferGradScores = 6;
    private const int BufferAccumulator = 7;

    private readonly CpuLayout _layout;
    private readonly CpuTilePlan _plan;
    private readonly CpuBackwardTensors _t;
    private readonly nint _columnStride;
    private readonly int _scoreStride;

    public CpuQueryGradPass(CpuLayout layout, CpuTilePlan plan, in CpuBackwardTensors tensors, int tilesPerTask)
    {
        _layout = layout;
        _plan = plan;
        _t = tensors;
        TilesPerTask = tilesPerTask;
        _columnStride = layout.ColumnStride(plan.MaxColumns);
        _scoreStride = CpuForwardPass<TV, TS>.ScoreStride(layout, plan);
    }

    public int TilesPerTask { get; }

    /// <summary>Tasks per (batch, KV head).</summary>
    public int TasksPerHead => (_plan.Tiles.Length + TilesPerTask - 1) / TilesPerTask;

    public long TaskCount => (long)_layout.P.Batch * _layout.P.KvHeads * TasksPerHead;

    /// <summary>Floats of one task's slot for the additional tokens' partial dK and dV.</summary>
    public long SlotLength => (long)_layout.P.AdditionalTokens * (_layout.HeadDimPadded + _layout.ValueDimPadded);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Run(long task, CpuWorkspace ws)
    {
        var layout = _layout;
        var p = layout.P;
        var dp = layout.HeadDimPadded;
        var group = (int)(task % TasksPerHead);
        var bk = task / TasksPerHead;
        var kvHead = (int)(bk % p.KvHeads);
        var b = (int)(bk / p.KvHeads);
        var bh = ((long)b * p.KvHeads) + kvHead;

        var sources = stackalloc CpuSource[2];
        float* slotK = null;
        float* slotV = null;
        if (p.AdditionalTokens > 0)
        {
            sources[1] = new CpuSource
            {
                Transposed = _t.AdditionalKeyT + (bh * p.HeadDim * layout.AdditionalPadded),
                TransposedStride = layout.AdditionalPadded,
                Transposed2 = _t.AdditionalValueT + (bh * p.ValueDim * layout.AdditionalPadded),
                Transposed2Stride = layout.AdditionalPadded,
                Rows = _t.AdditionalKeyRows + (bh * p.AdditionalTokens * dp),
                RowsStride = dp,
            };
            slotK = _t.AdditionalSlots + (task * SlotLength);
            slotV = slotK + ((long)p.AdditionalTokens * dp);
            new Span<float>(slotK, checked((int)SlotLength)).Clear();
        }

        var queries = ws.Buffer(BufferQueries, p.HeadDim * CpuBlock.Rows);
        var outputGrads = ws.Buffer(BufferOutputGrads, p.ValueDim * CpuBlock.Rows);
        var scores = ws.Buffer(BufferScores, CpuBlock.Rows * _scoreStride);
        var gradScores = ws.Buffer(BufferGradScores, CpuBlock.Rows * _scoreStride);
        var acc = ws.Buffer(BufferAccumulator, CpuBlock.Rows * dp);
        var stride = layout.TransposedStride;
        var keyT = _t.KeyT + (bh * p.HeadDim * stride);
        var valueT = _t.ValueT + (bh * p.ValueDim * stride);
        var key = _t.Key + (((b * layout.Tokens * p.KvHeads) + kvHead) * p.HeadDim);
        if (layout.ColumnsInPlace)
        {
            sources[0].Transposed = keyT;
            sources[0].TransposedStride = (nint)stride;
            sources[0].Transposed2 = valueT;
            sources[0].Transposed2Stride = (nint)stride;
        }

        if (layout.RowsInPlace(p.HeadDim))
        {
            sources[0].Rows = key;
            sources[0].RowsStride = (nint)p.KvHeads * p.HeadDim;
        }

        var tiles = _plan.Tiles;
        for (var ti = group * TilesPerTask; ti < Math.Min(tiles.Length, (group + 1) * TilesPerTask); ti++)
        {
            var tile = tiles[ti];
            if (!layout.ColumnsInPlace)
            {
                var keysT = ws.Buffer(BufferKeysT, p.HeadDim * _columnStride);
                var valuesT = ws.Buffer(BufferValuesT, p.ValueDim * _columnStride);
                layout.GatherTransposed(tile, keyT, p.HeadDim, keysT, _columnStride);
                layout.GatherTransposed(tile, valueT, p.ValueDim, valuesT, _columnStride);
                sources[0].Transposed = keysT;
                sources[0].TransposedStride = _columnStride;
                sources[0].Transposed2 = valuesT;
                sources[0].Transposed2Stride = _columnStride;
            }

            if (!layout.RowsInPlace(p.HeadDim))
            {
                var keyRows = ws.Buffer(BufferKeyRows, ((long)_plan.MaxColumns * dp) + dp);
                layout.GatherRows(tile, key, p.KvHeads, p.HeadDim, keyRows, dp);
                sources[0].Rows = keyRows;
                sources[0].RowsStride = dp;
            }

            for (var h = kvHead * layout.Group; h < (kvHead + 1) * layout.Group; h++)
            {
                for (var x0 = tile.Row0; x0 < tile.Row0 + tile.Rows0; x0++)
                {
                    for (var x1 = tile.Row1; x1 < tile.Row1 + tile.Rows1; x1++)
                    {
                        for (var x2 = tile.Row2; x2 < tile.Row2 + tile.Rows2; x2 += CpuBlock.Rows)
                        {
                            var rows = Math.Min(CpuBlock.Rows, tile.Row2 + tile.Rows2 - x2);
                            Block(ws, tile, b, h, x0, x1, x2, rows, sources, queries, outputGrads, scores, gradScores, acc, slotK, slotV);
                        }
                    }
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Block(
        CpuWorkspace ws, in CpuTile tile, int b, int h, int x0, int x1, int x2, int rows, CpuSource* sources,
        float* queries, float* outputGrads, float* scores, float* gradScores, float* acc, float* slotK, float* slotV)
    {
        var layout = _layout;
        var p = layout.P;
        var w = TS.Width;
        var dp = layout.HeadDimPadded;
        var runCount = layout.BuildBlock(
            ws, tile, x0, x1, x2, rows, inverse: false, p.AdditionalTokens, layout.ColumnsInPlace, layout.RowsInPlace(p.HeadDim));
        var runs = ws.Runs;
        var ranges = ws.Ranges;
        var lse = stackalloc float[CpuBlock.Rows];
        var delta = stackalloc float[CpuBlock.Rows];
        var firstRow = (((b * layout.Tokens) + layout.Token(tile, x0, x1, x2)) * p.Heads) + h;
        var rowStep = (long)p.D2 * p.Heads;
        for (var r = 0; r < rows; r++)
        {
            lse[r] = _t.Lse[firstRow + (r * rowStep)];
            delta[r] = _t.Delta[firstRow + (r * rowStep)];
        }

        var queryRows = CpuLayout.BlockRows(_t.Query + (firstRow * p.HeadDim), (nint)(rowStep * p.HeadDim), rows, p.HeadDim, queries, out var queryStride);
        var gradRows = CpuLayout.BlockRows(
            _t.OutputGrad + (firstRow * p.ValueDim), (nint)(rowStep * p.ValueDim), rows, p.ValueDim, outputGrads, out var gradStride);

        new Span<float>(acc, CpuBlock.Rows * dp).Clear();
        for (var first = 0; first < runCount;)
        {
            var count = layout.NextChunk(runs, first, runCount, _scoreStride);
            CpuMicroKernels.Scores<TV, TS>(queryRows, queryStride, p.HeadDim, false, sources, runs, first, count, scores, _scoreStride);
            CpuMicroKernels.Scores<TV, TS>(gradRows, gradStride, p.ValueDim, true, sources, runs, first, count, gradScores, _scoreStride);
            var factor = TS.Broadcast(p.Scale);
            for (var r = 0; r < rows; r++)
            {
                var shift = TS.Broadcast(-lse[r]);
                var d = TS.Broadcast(delta[r]);
                var s = scores + (r * _scoreStride);
                var g = gradScores + (r * _scoreStride);
                for (var i = first; i < first + count; i++)
                {
                    for (var c = runs[i].ScoreColumn; c < runs[i].ScoreColumn + (runs[i].Vectors * w); c += w)
                    {
                        var prob = TS.Exp(TS.MulAdd(TS.Load(s + c), factor, shift));
                        TS.Store(s + c, prob);
                        TS.Store(g + c, TS.Multiply(prob, TS.Subtract(TS.Load(g + c), d)));
                    }
                }
            }

            CpuMicroKernels.Accumulate<TV, TS>(gradScores, _scoreStride, sources, false, runs, first, count, ranges, 0, acc, dp, dp);
            if (rows > 4)
            {
                CpuMicroKernels.Accumulate<TV, TS>(gradScores, _scoreStride, sources, false, runs, first, count, ranges, 4, acc, dp, dp);
            }

            if (slotK is not null)
            {
                for (var i = first; i < first + count; i++)
                {
                    if (runs[i].Source == 1)
                    {
                        AdditionalPartials(runs[i].ScoreColumn, rows, firstRow, rowStep, scores, gradScores, slotK, slotV);
                    }
                }
            }

            first += count;
        }

        for (var r = 0; r < rows; r++)
        {
            Store(acc + (r * dp), _t.QueryGrad + ((firstRow + (r * rowStep)) * p.HeadDim), p.HeadDim, p.Scale);
        }
    }

    /// <summary>dK_add[m] += Σ_r dS[r, m] · q_r and dV_add[m] += Σ_r P[r, m] · dO_r over the block's rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void AdditionalPartials(int scoreColumn, int rows, long firstRow, long rowStep, float* scores, float* gradScores, float* slotK, float* slotV)
    {
        var p = _layout.P;
        var dp = _layout.HeadDimPadded;
        var dvp = _layout.ValueDimPadded;
        for (var m = 0; m < p.AdditionalTokens; m++)
        {
            var k = slotK + ((long)m * dp);
            var v = slotV + ((long)m * dvp);
            for (var r = 0; r < rows; r++)
            {
                var ds = gradScores[(r * _scoreStride) + scoreColumn + m];
                var prob = scores[(r * _scoreStride) + scoreColumn + m];
                var row = firstRow + (r * rowStep);
                AddScaled(k, _t.Query + (row * p.HeadDim), ds, p.HeadDim);
                AddScaled(v, _t.OutputGrad + (row * p.ValueDim), prob, p.ValueDim);
            }
        }
    }

    /// <summary><c>acc[0, n) += a · x[0, n)</c>.</summary>
    internal static void AddScaled(float* acc, float* x, float a, int n)
    {
        var w = TS.Width;
        var factor = TS.Broadcast(a);
        var c = 0;
        for (; c + w <= n; c += w)
        {
            TS.Store(acc + c, TS.MulAdd(factor, TS.Load(x + c), TS.Load(acc + c)));
        }

        for (; c < n; c++)
        {
            acc[c] = MathF.FusedMultiplyAdd(a, x[c], acc[c]);
        }
    }

    /// <summary><c>to[0, n) = scale · from[0, n)</c>.</summary>
    internal static void Store(float* from, float* to, int n, float scale)
    {
        var w = TS.Width;
        var factor = TS.Broadcast(scale);
        var c = 0;
        for (; c + w <= n; c += w)
        {
            TS.Store(to + c, TS.Multiply(TS.Load(from + c), factor));
        }

        for (; c < n; c++)
        {
            to[c] = from[c] * scale;
        }
    }
}
