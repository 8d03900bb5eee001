using Natten.Kernels.BlockSparse;

namespace Natten.Validation;

/// <summary>Validation of block-sparse attention: block masks and their parts when they are built, calls before any work.</summary>
internal static partial class ProblemValidator
{
    /// <summary>Checks a call's shape, mask and options and resolves them to a <see cref="BlockSparseProblem"/>.</summary>
    /// <exception cref="ArgumentException">A size, the mask or an option does not fit; the message names it.</exception>
    /// <param name="shape">The sizes.</param>
    /// <param name="mask">The pattern.</param>
    /// <param name="options">Scale, bias, backend, tiling.</param>
    /// <param name="elementType">Storage type of the tensors.</param>
    /// <param name="biasGradient">Whether a backward call asks for the bias gradient (its destination is checked by <see cref="CheckBlockSparseBackwardLengths"/>).</param>
    public static BlockSparseProblem ValidateBlockSparse(
        in BlockSparseShape shape, BlockMask mask, in BlockSparseOptions options, ElementType elementType, bool biasGradient = false)
    {
        if (mask is null)
        {
            ThrowHelper.ThrowArgument(nameof(mask), "mask is null; pass a BlockMask (see BlockMasks for the builders).");
        }

        RequirePositive(shape.Batch, "shape.Batch");
        RequirePositive(shape.QueryTokens, "shape.QueryTokens");
        RequirePositive(shape.KeyTokens, "shape.KeyTokens");
        RequirePositive(shape.Heads, "shape.Heads");
        RequirePositive(shape.KvHeads, "shape.KvHeads");
        RequirePositive(shape.HeadDim, "shape.HeadDim");
        RequirePositive(shape.ValueDim, "shape.ValueDim");
        if (shape.Heads % shape.KvHeads != 0)
        {
            ThrowHelper.ThrowShape(
                $"shape.Heads ({shape.Heads}) is not a multiple of shape.KvHeads ({shape.KvHeads}); GQA/MQA needs Heads % KvHeads == 0.");
        }

        if (mask.QueryTokens != shape.QueryTokens || mask.KeyTokens != shape.KeyTokens)
        {
            ThrowHelper.ThrowArgument(
                nameof(mask),
                $"mask covers {mask.QueryTokens} query × {mask.KeyTokens} key tokens but shape.QueryTokens × shape.KeyTokens is "
              + $"{shape.QueryTokens} × {shape.KeyTokens}; they must match.");
        }

        CheckPlanes(mask.Batches, mask.Heads, shape, "mask");
        if (mask.ElementMask is { } element)
        {
            CheckPlanes(element.Batches, element.Heads, shape, "mask.ElementMask");
        }

        var scale = options.Scale ?? 1.0 / Math.Sqrt(shape.HeadDim);
        if (!double.IsFinite(scale) || scale <= 0)
        {
            ThrowHelper.ThrowOptions($"options.Scale is {scale}; the scale must be finite and positive.");
        }

        if (options.Bias is { } bias)
        {
            if (bias.QueryTokens != shape.QueryTokens || bias.KeyTokens != shape.KeyTokens)
            {
                ThrowHelper.ThrowOptions(
                    $"options.Bias covers {bias.QueryTokens} query × {bias.KeyTokens} key tokens but the shape has "
                  + $"{shape.QueryTokens} × {shape.KeyTokens}; they must match.");
            }

            CheckPlanes(bias.Batches, bias.Heads, shape, "options.Bias");
        }

        if (options.Tiling is { } tiling
            && (tiling.Queries < 1 || tiling.Keys < 1 || tiling.KeyThreads < 0 || tiling.StagedQueries < 0))
        {
            ThrowHelper.ThrowOptions($"options.Tiling is {tiling}; Queries and Keys must be at least 1, KeyThreads and StagedQueries 0 (default) or more.");
        }

        try
        {
            return new BlockSparseProblem(shape, mask, scale, options.Bias, elementType, options.Tiling, biasGradient);
        }
        catch (OverflowException)
        {
            ThrowHelper.ThrowShape($"The tensors of {shape} have more than {long.MaxValue} elements.");
            return null;
        }
    }

    /// <summary>Checks the spans of a block-sparse forward call.</summary>
    public static void CheckBlockSparseForward<T>(BlockSparseProblem p, in ForwardTensors<T> t)
        where T : unmanaged
    {
        CheckBlockSparseForwardLengths(
            p, new ForwardLengths(t.Query.Length, t.Key.Length, t.Value.Length, 0, 0, t.Output.Length, t.LogSumExp.IsEmpty ? null : t.LogSumExp.Length));
        var regions = new RegionSet();
        regions.Add(Bytes(t.Query), "query");
        regions.Add(Bytes(t.Key), "key");
        regions.Add(Bytes(t.Value), "value");
        regions.AddDestination(Bytes(t.Output, p.OutputLength), "output");
        regions.AddDestination(Bytes(t.LogSumExp, p.LseLength), "logSumExp");
    }

    /// <summary>Checks the spans of a block-sparse backward call.</summary>
    public static void CheckBlockSparseBackward<T>(BlockSparseProblem p, in BackwardTensors<T> t)
        where T : unmanaged
    {
        CheckBlockSparseBackwardLengths(
            p,
            new BackwardLengths(
                t.Query.Length, t.Key.Length, t.Value.Length, 0, 0, t.Output.Length, t.LogSumExp.Length, t.OutputGrad.Length,
                t.QueryGrad.Length, t.KeyGrad.Length, t.ValueGrad.Length, 0, 0),
            t.BiasGradient.IsEmpty ? null : t.BiasGradient.Length);
        var regions = new RegionSet();
        regions.Add(Bytes(t.Query), "query");
        regions.Add(Bytes(t.Key), "key");
        regions.Add(Bytes(t.Value), "value");
        regions.Add(Bytes(t.Output), "output");
        regions.Add(Bytes(t.LogSumExp), "logSumExp");
        regions.Add(Bytes(t.OutputGrad), "outputGrad");
        regions.AddDestination(Bytes(t.QueryGrad, p.QueryLength), "queryGrad");
        regions.AddDestination(Bytes(t.KeyGrad, p.KeyLength), "keyGrad");
        regions.AddDestination(Bytes(t.ValueGrad, p.ValueLength), "valueGrad");
        regions.AddDestination(Bytes(t.BiasGradient, t.BiasGradient.Length), "biasGradient");
    }

    /// <summary>Element counts of a block-sparse forward call (spans or device tensors).</summary>
    public static void CheckBlockSparseForwardLengths(BlockSparseProblem p, in ForwardLengths l)
    {
        var s = p.Shape;
        CheckInput(l.Query, p.QueryLength, "query", $"[B={s.Batch}, Nq={s.QueryTokens}, H={s.Heads}, D={s.HeadDim}]");
        CheckInput(l.Key, p.KeyLength, "key", $"[B={s.Batch}, Nk={s.KeyTokens}, Hkv={s.KvHeads}, D={s.HeadDim}]");
        CheckInput(l.Value, p.ValueLength, "value", $"[B={s.Batch}, Nk={s.KeyTokens}, Hkv={s.KvHeads}, Dv={s.ValueDim}]");
        CheckDestination(l.Output, p.OutputLength, "output", $"[B={s.Batch}, Nq={s.QueryTokens}, H={s.Heads}, Dv={s.ValueDim}]");
        if (l.LogSumExp is { } lse)
        {
            CheckDestination(lse, p.LseLength, "logSumExp", $"[B={s.Batch}, Nq={s.QueryTokens}, H={s.Heads}]");
        }
    }

    /// <summary>Element counts of a block-sparse backward call (spans or device tensors), including the optional bias gradient.</summary>
    /// <param name="p">The validated problem.</param>
    /// <param name="l">The tensors' element counts.</param>
    /// <param name="biasGradient">The bias gradient destination's element count, or null when none is given.</param>
    public static void CheckBlockSparseBackwardLengths(BlockSparseProblem p, in BackwardLengths l, long? biasGradient = null)
    {
        var s = p.Shape;
        var queryLayout = $"[B={s.Batch}, Nq={s.QueryTokens}, H={s.Heads}, D={s.HeadDim}]";
        var keyLayout = $"[B={s.Batch}, Nk={s.KeyTokens}, Hkv={s.KvHeads}, D={s.HeadDim}]";
        var valueLayout = $"[B={s.Batch}, Nk={s.KeyTokens}, Hkv={s.KvHeads}, Dv={s.ValueDim}]";
        var outputLayout = $"[B={s.Batch}, Nq={s.QueryTokens}, H={s.Heads}, Dv={s.ValueDim}]";
        CheckInput(l.Query, p.QueryLength, "query", queryLayout);
        CheckInput(l.Key, p.KeyLength, "key", keyLayout);
        CheckInput(l.Value, p.ValueLength, "value", valueLayout);
        CheckInput(l.Output, p.OutputLength, "output", outputLayout);
        CheckInput(l.LogSumExp, p.LseLength, "logSumExp", $"[B={s.Batch}, Nq={s.QueryTokens}, H={s.Heads}]");
        CheckInput(l.OutputGrad, p.OutputLength, "outputGrad", outputLayout);
        CheckDestination(l.QueryGrad, p.QueryLength, "queryGrad", queryLayout);
        CheckDestination(l.KeyGrad, p.KeyLength, "keyGrad", keyLayout);
        CheckDestination(l.ValueGrad, p.ValueLength, "valueGrad", valueLayout);
        if (biasGradient is { } length)
        {
            var bias = p.Bias;
            if (bias is null)
            {
                ThrowHelper.ThrowArgument(
                    "biasGradient",
                    "biasGradient was given but options.Bias is null: there is no score bias to differentiate. Pass no bias gradient, or set options.Bias.");
            }

            if (length != bias.Length)
            {
                ThrowHelper.ThrowLength("biasGradient", length, bias.Length, $"one float per bias value, like options.Bias {bias.Layout}");
            }
        }

        if (p.BiasGradient != biasGradient.HasValue)
        {
            throw new InvalidOperationException("The problem was validated for a different bias-gradient request than the call makes.");
        }
    }

    /// <summary>Token counts, block sizes and plane counts of a block mask.</summary>
    public static void CheckBlockMaskSizes(int queryTokens, int keyTokens, int queryBlockSize, int keyBlockSize, int heads, int batches)
    {
        RequireMaskPositive(queryTokens, nameof(queryTokens));
        RequireMaskPositive(keyTokens, nameof(keyTokens));
        RequireMaskPositive(queryBlockSize, nameof(queryBlockSize));
        RequireMaskPositive(keyBlockSize, nameof(keyBlockSize));
        RequireMaskPositive(heads, nameof(heads));
        RequireMaskPositive(batches, nameof(batches));
        if ((long)batches * heads * ((queryTokens + (long)queryBlockSize - 1) / queryBlockSize) >= int.MaxValue)
        {
            ThrowHelper.ThrowArgument(nameof(queryTokens), $"{batches}·{heads} lists of ⌈{queryTokens}/{queryBlockSize}⌉ query blocks are too many rows for one mask.");
        }
    }

    /// <summary>An element mask used by a block mask of these sizes: same token counts (when it has its own), compatible planes.</summary>
    public static void CheckElementMaskFits(ElementMask elementMask, int queryTokens, int keyTokens, int heads, int batches)
    {
        if ((elementMask.QueryTokens is { } nq && nq != queryTokens) || (elementMask.KeyTokens is { } nk && nk != keyTokens))
        {
            ThrowHelper.ThrowArgument(
                nameof(elementMask),
                $"elementMask is built for {elementMask.QueryTokens} query × {elementMask.KeyTokens} key tokens but the block mask has "
              + $"{queryTokens} × {keyTokens}.");
        }

        if (!Broadcasts(elementMask.Heads, heads) || !Broadcasts(elementMask.Batches, batches))
        {
            ThrowHelper.ThrowArgument(
                nameof(elementMask),
                $"elementMask distinguishes {elementMask.Batches} batch entries × {elementMask.Heads} heads but the block mask has "
              + $"{batches} × {heads}; each count must be 1 or equal.");
        }
    }

    /// <summary>The length of low-resolution block flags.</summary>
    public static void CheckBlockFlags(int length, int queryBlocks, int keyBlocks, int heads, int batches)
    {
        var expected = (long)batches * heads * queryBlocks * keyBlocks;
        if (length != expected)
        {
            ThrowHelper.ThrowLength("blocks", length, expected, $"[batches={batches}, heads={heads}, query blocks={queryBlocks}, key blocks={keyBlocks}]");
        }
    }

    /// <summary>Explicit compressed rows: offsets, in-range sorted unique indices per row, kinds, and an element mask for partial entries.</summary>
    public static void CheckCompressedRows(
        ReadOnlySpan<int> rowOffsets, ReadOnlySpan<int> keyBlocks, ReadOnlySpan<BlockKind> kinds, int queryBlocks, int keyBlockCount,
        int heads, int batches, bool hasElementMask)
    {
        var rows = batches * heads * queryBlocks;
        if (rowOffsets.Length != rows + 1)
        {
            ThrowHelper.ThrowLength(nameof(rowOffsets), rowOffsets.Length, rows + 1L, $"batches·heads·query blocks + 1 = {batches}·{heads}·{queryBlocks} + 1");
        }

        if (rowOffsets[0] != 0)
        {
            ThrowHelper.ThrowArgument(nameof(rowOffsets), $"rowOffsets[0] is {rowOffsets[0]}; the first row starts at 0.");
        }

        if (rowOffsets[rows] != keyBlocks.Length)
        {
            ThrowHelper.ThrowArgument(
                nameof(rowOffsets), $"rowOffsets[{rows}] (the end of the last row) is {rowOffsets[rows]} but keyBlocks has {keyBlocks.Length} entries; they must match.");
        }

        if (!kinds.IsEmpty && kinds.Length != keyBlocks.Length)
        {
            ThrowHelper.ThrowLength(nameof(kinds), kinds.Length, keyBlocks.Length, "one kind per entry of keyBlocks, or none for all full");
        }

        // Non-decreasing offsets from 0 to the entry count keep every row inside keyBlocks.
        for (var r = 0; r < rows; r++)
        {
            if (rowOffsets[r + 1] < rowOffsets[r])
            {
                ThrowHelper.ThrowArgument(
                    nameof(rowOffsets), $"rowOffsets decreases at row {r}: {rowOffsets[r]} then {rowOffsets[r + 1]}; offsets must not decrease.");
            }
        }

        for (var r = 0; r < rows; r++)
        {
            for (var e = rowOffsets[r]; e < rowOffsets[r + 1]; e++)
            {
                var block = keyBlocks[e];
                if (block < 0 || block >= keyBlockCount)
                {
                    ThrowHelper.ThrowArgument(
                        nameof(keyBlocks), $"keyBlocks[{e}] (row {r}) is {block}; key block indices must be in [0, {keyBlockCount}).");
                }

                if (e > rowOffsets[r] && block == keyBlocks[e - 1])
                {
                    ThrowHelper.ThrowArgument(nameof(keyBlocks), $"keyBlocks[{e}] (row {r}) repeats block {block}; a row lists each block once.");
                }

                if (e > rowOffsets[r] && block < keyBlocks[e - 1])
                {
                    ThrowHelper.ThrowArgument(
                        nameof(keyBlocks), $"keyBlocks[{e}] (row {r}) is {block}, after {keyBlocks[e - 1]}; each row's blocks must be sorted ascending.");
                }

                if (!kinds.IsEmpty && kinds[e] is not (BlockKind.Full or BlockKind.Partial))
                {
                    ThrowHelper.ThrowArgument(nameof(kinds), $"kinds[{e}] is {(int)kinds[e]}, not Full or Partial.");
                }

                if (!kinds.IsEmpty && kinds[e] == BlockKind.Partial && !hasElementMask)
                {
                    ThrowHelper.ThrowArgument(
                        nameof(kinds), $"kinds[{e}] (row {r}) is Partial but no elementMask is given; partial blocks need a predicate.");
                }
            }
        }
    }

    /// <summary>The length of a dense boolean mask.</summary>
    public static void CheckDenseMask(int length, int queryTokens, int keyTokens, int heads, int batches, string name)
    {
        RequireMaskPositive(queryTokens, nameof(queryTokens));
        RequireMaskPositive(keyTokens, nameof(keyTokens));
        RequireMaskPositive(heads, nameof(heads));
        RequireMaskPositive(batches, nameof(batches));
        var expected = (long)batches * heads * queryTokens * keyTokens;
        if (length != expected)
        {
            ThrowHelper.ThrowLength(name, length, expected, $"[batches={batches}, heads={heads}, Nq={queryTokens}, Nk={keyTokens}]");
        }
    }

    /// <summary>FlashAttention window sizes: −1 (no limit) or more.</summary>
    public static void CheckWindow(int left, int right)
    {
        if (left < -1)
        {
            ThrowHelper.ThrowArgument(nameof(left), $"left is {left}; a window side is −1 (no limit) or at least 0.");
        }

        if (right < -1)
        {
            ThrowHelper.ThrowArgument(nameof(right), $"right is {right}; a window side is −1 (no limit) or at least 0.");
        }
    }

    /// <summary>Segment id arrays: non-empty, whole rows per batch entry.</summary>
    public static void CheckSegments(int queryLength, int keyLength, int batches)
    {
        RequireMaskPositive(batches, nameof(batches));
        if (queryLength == 0 || queryLength % batches != 0)
        {
            ThrowHelper.ThrowArgument("querySegments", $"querySegments has {queryLength} ids; it needs batches·Nq = {batches}·Nq with Nq ≥ 1.");
        }

        if (keyLength == 0 || keyLength % batches != 0)
        {
            ThrowHelper.ThrowArgument("keySegments", $"keySegments has {keyLength} ids; it needs batches·Nk = {batches}·Nk with Nk ≥ 1.");
        }
    }

    /// <summary>A grid window's per-axis values, resolved and padded to three axes.</summary>
    public static GridAxis[] CheckGridWindow(AxisValues extents, AxisValues group, AxisValues before, AxisValues after, AxisValues tokenTile)
    {
        if (!extents.IsSpecified || extents.Count > AxisValues.MaxRank)
        {
            ThrowHelper.ThrowArgument(nameof(extents), $"extents is '{extents}'; give 1 to 3 spatial extents.");
        }

        var rank = extents.IsUniform ? 1 : extents.Count;
        var n = ResolveGrid(extents, rank, nameof(extents), null, 1);
        var g = ResolveGrid(group, rank, nameof(group), null, 1);
        var l = ResolveGrid(before, rank, nameof(before), null, 0);
        var r = ResolveGrid(after, rank, nameof(after), null, 0);
        var t = ResolveGrid(tokenTile, rank, nameof(tokenTile), 1, 1);
        var axes = new GridAxis[3];
        var pad = 3 - rank;
        for (var a = 0; a < 3; a++)
        {
            if (a < pad)
            {
                axes[a] = GridAxis.Single;
                continue;
            }

            var i = a - pad;
            if (n[i] % t[i] != 0)
            {
                ThrowHelper.ThrowArgument(nameof(tokenTile), $"tokenTile on axis {i} is {t[i]}, which does not divide the extent {n[i]}.");
            }

            axes[a] = new GridAxis(n[i], t[i], g[i], l[i], r[i]);
        }

        if ((long)axes[0].Length * axes[1].Length * axes[2].Length > int.MaxValue)
        {
            ThrowHelper.ThrowArgument(nameof(extents), $"extents {extents} hold more than {int.MaxValue} tokens.");
        }

        return axes;
    }

    /// <summary>Two element masks that can be combined: same token counts where both have them, compatible planes.</summary>
    public static void CheckConjunction(ElementMask first, ElementMask second)
    {
        if ((first.QueryTokens is { } a && second.QueryTokens is { } b && a != b)
            || (first.KeyTokens is { } c && second.KeyTokens is { } d && c != d))
        {
            ThrowHelper.ThrowArgument(
                "other",
                $"the masks are built for {first.QueryTokens} × {first.KeyTokens} and {second.QueryTokens} × {second.KeyTokens} tokens; they must match.");
        }

        if (!Broadcasts(first.Heads, second.Heads) || !Broadcasts(first.Batches, second.Batches))
        {
            ThrowHelper.ThrowArgument(
                "other",
                $"the masks distinguish {first.Batches} × {first.Heads} and {second.Batches} × {second.Heads} (batch entries × heads); each count must be 1 or equal.");
        }
    }

    /// <summary>A dense bias: sizes, length and finite values.</summary>
    public static void CheckDenseBias(ReadOnlySpan<float> values, int queryTokens, int keyTokens, int heads, int batches)
    {
        CheckDenseMask(values.Length, queryTokens, keyTokens, heads, batches, nameof(values));
        for (var i = 0; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i]))
            {
                ThrowHelper.ThrowArgument(nameof(values), $"values[{i}] is {values[i]}; a bias must be finite (mask pairs out with the BlockMask instead).");
            }
        }
    }

    /// <summary>A relative positional bias table: extents, kernel sizes and dilations (K·d ≤ n), length, finite values.</summary>
    public static (int[] Extents, int[] Kernel, int[] Dilation) CheckRelativePositionBias(
        ReadOnlySpan<float> table, int heads, AxisValues extents, AxisValues kernelSize, AxisValues dilation)
    {
        RequireMaskPositive(heads, nameof(heads));
        if (!extents.IsSpecified || extents.Count > AxisValues.MaxRank)
        {
            ThrowHelper.ThrowArgument(nameof(extents), $"extents is '{extents}'; give 1 to 3 spatial extents.");
        }

        var rank = extents.IsUniform ? 1 : extents.Count;
        var n = ResolveGrid(extents, rank, nameof(extents), null, 1);
        var k = ResolveGrid(kernelSize, rank, nameof(kernelSize), null, 1);
        var d = ResolveGrid(dilation, rank, nameof(dilation), 1, 1);
        long expected = heads;
        for (var a = 0; a < rank; a++)
        {
            if ((long)k[a] * d[a] > n[a])
            {
                ThrowHelper.ThrowArgument(nameof(kernelSize), $"kernelSize × dilation on axis {a} is {k[a]} × {d[a]}, more than the axis length {n[a]}.");
            }

            expected *= (2 * k[a]) - 1;
        }

        if (table.Length != expected)
        {
            ThrowHelper.ThrowLength(nameof(table), table.Length, expected, $"[heads={heads}, {string.Join(", ", k.Select(x => $"2·{x}−1"))}]");
        }

        for (var i = 0; i < table.Length; i++)
        {
            if (!float.IsFinite(table[i]))
            {
                ThrowHelper.ThrowArgument(nameof(table), $"table[{i}] is {table[i]}; a bias must be finite.");
            }
        }

        var pad = 3 - rank;
        int[] Padded(int[] values) => [.. Enumerable.Range(0, 3).Select(a => a < pad ? 1 : values[a - pad])];
        return (Padded(n), Padded(k), Padded(d));
    }

    /// <summary>S2-Attention strided heads: sizes and counts in range.</summary>
    public static void CheckStridedHeads(int tokens, int heads, int blockSize, int localBlocks, int verticalStride, int denseHeads)
    {
        RequireMaskPositive(tokens, nameof(tokens));
        RequireMaskPositive(heads, nameof(heads));
        RequireMaskPositive(blockSize, nameof(blockSize));
        RequireMaskPositive(localBlocks, nameof(localBlocks));
        RequireMaskPositive(verticalStride, nameof(verticalStride));
        if (denseHeads < 0 || denseHeads > heads)
        {
            ThrowHelper.ThrowArgument(nameof(denseHeads), $"denseHeads is {denseHeads}; it must be between 0 and heads ({heads}).");
        }

        var blocks = (tokens + (long)blockSize - 1) / blockSize;
        if (heads * blocks * blocks > int.MaxValue)
        {
            ThrowHelper.ThrowArgument(nameof(tokens), $"{heads} heads × {blocks}² blocks are too many for one mask; use larger blocks.");
        }
    }

    /// <summary>cu_seqlens: starts at 0, never decreases, at least one token.</summary>
    public static void CheckCumulativeLengths(ReadOnlySpan<int> cumulative)
    {
        if (cumulative.Length < 2 || cumulative[0] != 0)
        {
            ThrowHelper.ThrowArgument(
                "cumulativeSequenceLengths", "cumulativeSequenceLengths must start at 0 and hold at least one document end (e.g. [0, 5, 12]).");
        }

        for (var i = 1; i < cumulative.Length; i++)
        {
            if (cumulative[i] < cumulative[i - 1])
            {
                ThrowHelper.ThrowArgument(
                    "cumulativeSequenceLengths",
                    $"cumulativeSequenceLengths decreases at index {i}: {cumulative[i - 1]} then {cumulative[i]}; document lengths cannot be negative.");
            }
        }

        if (cumulative[^1] < 1)
        {
            ThrowHelper.ThrowArgument("cumulativeSequenceLengths", "cumulativeSequenceLengths gives no token (its last entry is 0).");
        }
    }

    /// <summary>Valid key lengths per batch entry: 0 to Nk, at least one entry.</summary>
    public static void CheckKeyLengths(ReadOnlySpan<int> keyLengths, int keyTokens)
    {
        RequireMaskPositive(keyTokens, nameof(keyTokens));
        if (keyLengths.IsEmpty)
        {
            ThrowHelper.ThrowArgument(nameof(keyLengths), "keyLengths is empty; give one length per batch entry.");
        }

        for (var b = 0; b < keyLengths.Length; b++)
        {
            if (keyLengths[b] < 0 || keyLengths[b] > keyTokens)
            {
                ThrowHelper.ThrowArgument(nameof(keyLengths), $"keyLengths[{b}] is {keyLengths[b]}; it must be between 0 and keyTokens ({keyTokens}).");
            }
        }
    }

    /// <summary>A count that must be 1 or the problem's (batch or heads) for the given part of the call.</summary>
    private static void CheckPlanes(int batches, int heads, in BlockSparseShape shape, string what)
    {
        if (batches != 1 && batches != shape.Batch)
        {
            ThrowHelper.ThrowArgument(
                what.StartsWith("options", StringComparison.Ordinal) ? "options" : "mask",
                $"{what} distinguishes {batches} batch entries but shape.Batch is {shape.Batch}; give 1 (shared) or {shape.Batch}.");
        }

        if (heads != 1 && heads != shape.Heads)
        {
            ThrowHelper.ThrowArgument(
                what.StartsWith("options", StringComparison.Ordinal) ? "options" : "mask",
                $"{what} distinguishes {heads} heads but shape.Heads is {shape.Heads}; give 1 (shared) or {shape.Heads}.");
        }
    }

    private static bool Broadcasts(int a, int b) => a == 1 || b == 1 || a == b;

    private static void RequireMaskPositive(int value, string name)
    {
        if (value < 1)
        {
            ThrowHelper.ThrowArgument(name, $"{name} is {value}; it must be at least 1.");
        }
    }

    /// <summary>Per-axis values for a grid of <paramref name="rank"/> axes; <paramref name="fallback"/> when unspecified (null: required).</summary>
    private static int[] ResolveGrid(AxisValues values, int rank, string name, int? fallback, int min)
    {
        if (!values.IsSpecified)
        {
            if (fallback is { } f)
            {
                return [.. Enumerable.Repeat(f, rank)];
            }

            ThrowHelper.ThrowArgument(name, $"{name} is unspecified; give one value or one per axis ({rank}).");
        }

        if (!values.IsUniform && values.Count != rank)
        {
            ThrowHelper.ThrowArgument(name, $"{name} has {values.Count} values but the grid has {rank} axes.");
        }

        var resolved = Enumerable.Range(0, rank).Select(a => values.IsUniform ? values[0] : values[a]).ToArray();
        for (var a = 0; a < rank; a++)
        {
            if (resolved[a] < min)
            {
                ThrowHelper.ThrowArgument(name, $"{name} on axis {a} is {resolved[a]}; it must be at least {min}.");
            }
        }

        return resolved;
    }
}
