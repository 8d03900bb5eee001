using System.Runtime.CompilerServices;
using Natten.Kernels.Common;

namespace Natten.Kernels.Cpu;

/// <summary>
/// What every pass shares: the problem, its axis tables, the vector width and the address arithmetic
/// of the heads-last tensors and of the per-call transposed copies (<c>[B, heads, C, N]</c>, one
/// contiguous row per channel, so a run's columns are consecutive floats: read in place, or copied into
/// a tile buffer with vector moves when the last axis is dilated).
/// </summary>
internal sealed unsafe class CpuLayout
{
    public CpuLayout(in ProblemParams p, int width)
    {
        P = p;
        Width = width;
        Axes =
        [
            AxisWindows.Create(p.N0, p.K0, p.S0, p.D0, p.C0 != 0),
            AxisWindows.Create(p.N1, p.K1, p.S1, p.D1, p.C1 != 0),
            AxisWindows.Create(p.N2, p.K2, p.S2, p.D2, p.C2 != 0),
        ];
        Tokens = p.Tokens;
        TransposedStride = TransposedStrideFor(p.Tokens);
        HeadDimPadded = RoundUp(p.HeadDim, width);
        ValueDimPadded = RoundUp(p.ValueDim, width);
        AdditionalPadded = RoundUp(p.AdditionalTokens, width);
    }

    /// <summary>The problem (a field: its members are read without copying the struct).</summary>
    public readonly ProblemParams P;

    public int Width { get; }

    public AxisWindows[] Axes { get; }

    public long Tokens { get; }

    /// <summary>
    /// Row stride of the per-call transposed copies: N plus room for a vector read past the end, and
    /// not a multiple of 256 floats (rows a multiple of 1 KiB apart would share L1 sets).
    /// </summary>
    public long TransposedStride { get; }

    /// <summary>
    /// Whether the score kernels read the transposed copies in place: with no dilation on the last
    /// axis, a run's columns are consecutive tokens.
    /// </summary>
    public bool ColumnsInPlace => P.D2 == 1;

    /// <summary>D rounded up to the vector width (row operands are that wide).</summary>
    public int HeadDimPadded { get; }

    /// <summary>Dv rounded up to the vector width.</summary>
    public int ValueDimPadded { get; }

    /// <summary>The additional tokens rounded up to the vector width.</summary>
    public int AdditionalPadded { get; }

    public int Group => P.Heads / P.KvHeads;

    public static int RoundUp(int value, int multiple) => (value + multiple - 1) / multiple * multiple;

    /// <summary>
    /// Whether row operands of <paramref name="channels"/> floats are read in place: consecutive tokens,
    /// and rows a whole number of vectors wide (the accumulation reads whole vectors).
    /// </summary>
    public bool RowsInPlace(int channels) => P.D2 == 1 && channels % Width == 0;

    /// <summary>See <see cref="TransposedStride"/>.</summary>
    public static long TransposedStrideFor(long tokens)
    {
        var stride = (tokens + 16 + 15) / 16 * 16;
        return stride % 256 == 0 ? stride + 16 : stride;
    }

    /// <summary>Floats of a transposed copy of a tensor with <paramref name="heads"/> × <paramref name="channels"/> per token.</summary>
    public long TransposedLength(int heads, int channels) => ((long)P.Batch * heads * channels * TransposedStride) + Width;

    /// <summary>Token index of group coordinates (y0, y1, y2) in dilation groups (g0, g1, g2).</summary>
    public long Token(in CpuTile tile, int y0, int y1, int y2)
        => ((((long)y0 * P.D0) + tile.Group0) * P.N1 + ((y1 * P.D1) + tile.Group1)) * P.N2 + (y2 * P.D2) + tile.Group2;

    /// <summary>
    /// A column stride of at least <paramref name="columns"/> plus one vector, a multiple of the width
    /// and not a multiple of 256 floats (rows 1 KiB apart would share L1 sets).
    /// </summary>
    public nint ColumnStride(int columns)
    {
        var stride = RoundUp(columns + Width, Width);
        if (stride % 256 == 0)
        {
            stride += Width;
        }

        return stride;
    }

    /// <summary>
    /// Copies <c>x[B, N, heads, C]</c> to <c>t[B, heads, C, stride]</c> (in parallel, blocks of tokens,
    /// 8 × 8 register transposes).
    /// </summary>
    public static void TransposeHeads(float* x, int batch, long tokens, int heads, int channels, float* t, long stride, ParallelOptions options)
    {
        const int Block = 256;
        var blocks = (tokens + Block - 1) / Block;
        var xs = x;
        var ts = t;
        Parallel.For(0L, batch * heads * blocks, options, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (index) =>
        {
            var block = index % blocks;
            var bh = index / blocks;
            var h = (int)(bh % heads);
            var b = bh / heads;
            var t0 = block * Block;
            var count = (int)(Math.Min(t0 + Block, tokens) - t0);
            var src = xs + ((((b * tokens) + t0) * heads) + h) * channels;
            var dst = ts + (((b * heads) + h) * channels * stride) + t0;
            CpuCopy.Transpose(src, (nint)heads * channels, dst, (nint)stride, count, channels);
        });
    }

    /// <summary>
    /// Copies the tile's column box of one head of a transposed tensor into
    /// <c>dst[c * stride + column]</c>, columns in box order (last axis fastest).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void GatherTransposed(in CpuTile tile, float* transposed, int channels, float* dst, nint stride)
    {
        var n2 = tile.Columns2;
        if (n2 == 0 || tile.ColumnCount == 0)
        {
            return;
        }

        var column = 0;
        for (var y0 = tile.Column0; y0 < tile.Column0 + tile.Columns0; y0++)
        {
            for (var y1 = tile.Column1; y1 < tile.Column1 + tile.Columns1; y1++)
            {
                var token = Token(tile, y0, y1, tile.Column2);
                for (var c = 0; c < channels; c++)
                {
                    var src = transposed + (c * TransposedStride) + token;
                    var to = dst + (c * stride) + column;
                    if (P.D2 == 1)
                    {
                        CpuCopy.Copy(src, to, n2);
                    }
                    else
                    {
                        for (var i = 0; i < n2; i++)
                        {
                            to[i] = src[i * P.D2];
                        }
                    }
                }

                column += n2;
            }
        }
    }

    /// <summary>
    /// Copies the tile's column box of one head of a heads-last tensor <c>x[B, N, heads, C]</c>
    /// (batch and head already applied to <paramref name="x"/>) into rows <c>dst[column * stride + c]</c>,
    /// zero-padded to <paramref name="stride"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void GatherRows(in CpuTile tile, float* x, int heads, int channels, float* dst, int stride)
    {
        var column = 0;
        for (var y0 = tile.Column0; y0 < tile.Column0 + tile.Columns0; y0++)
        {
            for (var y1 = tile.Column1; y1 < tile.Column1 + tile.Columns1; y1++)
            {
                for (var y2 = tile.Column2; y2 < tile.Column2 + tile.Columns2; y2++)
                {
                    var src = x + (Token(tile, y0, y1, y2) * heads * channels);
                    var row = dst + ((long)column * stride);
                    CpuCopy.Copy(src, row, channels);
                    CpuCopy.Clear(row + channels, stride - channels);
                    column++;
                }
            }
        }
    }

    /// <summary>Copies per-token scalars of one head, <c>s[B, heads, N]</c> (batch and head applied), for the tile's column box.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void GatherScalars(in CpuTile tile, float* s, float* dst)
    {
        var column = 0;
        for (var y0 = tile.Column0; y0 < tile.Column0 + tile.Columns0; y0++)
        {
            for (var y1 = tile.Column1; y1 < tile.Column1 + tile.Columns1; y1++)
            {
                for (var y2 = tile.Column2; y2 < tile.Column2 + tile.Columns2; y2++)
                {
                    dst[column++] = s[Token(tile, y0, y1, y2)];
                }
            }
        }
    }

    /// <summary>
    /// Lays out the block of <paramref name="rows"/> rows from (x0, x1, x2) of a tile (group coordinates):
    /// fills <see cref="CpuWorkspace.Runs"/> with one run per first-axis coordinate pair of the block's
    /// window (plus one run for the additional tokens) and <see cref="CpuWorkspace.Ranges"/> with each
    /// row's positions in them. Padded rows see nothing. Run columns are token indices for operands read in
    /// place and positions in the tile's gathered buffers otherwise. Returns the number of runs.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public int BuildBlock(
        CpuWorkspace ws, in CpuTile tile, int x0, int x1, int x2, int rows, bool inverse, int additional, bool columnsInPlace, bool rowsInPlace)
    {
        var w0 = Axes[0].Groups[tile.Group0];
        var w1 = Axes[1].Groups[tile.Group1];
        var w2 = Axes[2].Groups[tile.Group2];
        var (starts0, ends0) = inverse ? (w0.QueryStart, w0.QueryEnd) : (w0.KeyStart, w0.KeyEnd);
        var (starts1, ends1) = inverse ? (w1.QueryStart, w1.QueryEnd) : (w1.KeyStart, w1.KeyEnd);
        var (starts2, ends2) = inverse ? (w2.QueryStart, w2.QueryEnd) : (w2.KeyStart, w2.KeyEnd);
        var ranges = ws.Ranges;

        var runStart = int.MaxValue;
        var runEnd = int.MinValue;
        for (var r = 0; r < rows; r++)
        {
            if (starts2[x2 + r] < ends2[x2 + r])
            {
                runStart = Math.Min(runStart, starts2[x2 + r]);
                runEnd = Math.Max(runEnd, ends2[x2 + r]);
            }
        }

        for (var r = 0; r < CpuBlock.Rows; r++)
        {
            var sees = r < rows && starts2[x2 + r] < ends2[x2 + r];
            ranges[CpuBlock.Lo(CpuBlock.NeighborhoodRanges, r)] = sees ? starts2[x2 + r] - runStart : 0;
            ranges[CpuBlock.Hi(CpuBlock.NeighborhoodRanges, r)] = sees ? ends2[x2 + r] - runStart : 0;
            ranges[CpuBlock.Lo(CpuBlock.AdditionalRanges, r)] = 0;
            ranges[CpuBlock.Hi(CpuBlock.AdditionalRanges, r)] = r < rows ? additional : 0;
        }

        var count = 0;
        if (runStart < runEnd && starts0[x0] < ends0[x0] && starts1[x1] < ends1[x1])
        {
            var vectors = (runEnd - runStart + Width - 1) / Width;
            ws.EnsureRuns(((ends0[x0] - starts0[x0]) * (ends1[x1] - starts1[x1])) + 1);
            var runs = ws.Runs;
            for (var y0 = starts0[x0]; y0 < ends0[x0]; y0++)
            {
                for (var y1 = starts1[x1]; y1 < ends1[x1]; y1++)
                {
                    var inTile = ((((y0 - tile.Column0) * tile.Columns1) + (y1 - tile.Column1)) * tile.Columns2) + (runStart - tile.Column2);
                    var token = columnsInPlace || rowsInPlace ? Token(tile, y0, y1, runStart) : 0;
                    runs[count++] = new CpuRun
                    {
                        Source = 0,
                        Column = columnsInPlace ? token : inTile,
                        RowColumn = rowsInPlace ? token : inTile,
                        Vectors = vectors,
                        RangeSet = CpuBlock.NeighborhoodRanges,
                    };
                }
            }
        }

        if (additional > 0)
        {
            ws.EnsureRuns(count + 1);
            ws.Runs[count++] = new CpuRun
            {
                Source = 1,
                Column = 0,
                RowColumn = 0,
                Vectors = (additional + Width - 1) / Width,
                RangeSet = CpuBlock.AdditionalRanges,
            };
        }

        return count;
    }

    /// <summary>
    /// Assigns score columns to runs <c>[first, …)</c> until <paramref name="capacity"/> floats are used
    /// (at least one run) and returns the number of runs in that chunk.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public int NextChunk(CpuRun[] runs, int first, int count, int capacity)
    {
        var used = 0;
        var i = first;
        while (i < count && (i == first || used + (runs[i].Vectors * Width) <= capacity))
        {
            runs[i].ScoreColumn = used;
            used += runs[i].Vectors * Width;
            i++;
        }

        return i - first;
    }

    /// <summary>
    /// The block's rows for the score kernel, which always reads 8: in place when the block is full, else
    /// copied into <paramref name="scratch"/> (<c>[8][channels]</c>, missing rows zero).
    /// </summary>
    /// <param name="first">The block's first row in the tensor.</param>
    /// <param name="step">Floats from one row of the block to the next in the tensor.</param>
    /// <param name="rows">Rows in the block.</param>
    /// <param name="channels">Floats per row.</param>
    /// <param name="scratch">At least 8 × <paramref name="channels"/> floats.</param>
    /// <param name="stride">The returned rows' stride.</param>
    public static float* BlockRows(float* first, nint step, int rows, int channels, float* scratch, out nint stride)
    {
        if (rows == CpuBlock.Rows)
        {
            stride = step;
            return first;
        }

        for (var r = 0; r < CpuBlock.Rows; r++)
        {
            var to = new Span<float>(scratch + (r * channels), channels);
            if (r < rows)
            {
                new ReadOnlySpan<float>(first + (r * step), channels).CopyTo(to);
            }
            else
            {
                to.Clear();
            }
        }

        stride = channels;
        return scratch;
    }
}
