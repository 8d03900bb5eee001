using System.Runtime.InteropServices;

namespace Natten.Validation;

/// <summary>
/// All validation, before any work: the rules of docs/SEMANTICS.md, shape consistency and span
/// lengths/overlaps. Every entry point calls this first; kernels and backends never re-check.
/// </summary>
internal static partial class ProblemValidator
{
    /// <summary>Checks the shape and options and resolves them to an <see cref="AttentionProblem"/>.</summary>
    /// <exception cref="ArgumentException">The shape or options break a rule; the message names the field and axis.</exception>
    public static AttentionProblem Validate(in AttentionShape shape, in NeighborhoodAttentionOptions options, ElementType elementType)
    {
        var rank = shape.Rank;
        if (!shape.Spatial.IsSpecified)
        {
            ThrowHelper.ThrowShape("shape.Spatial is unspecified: give 1 to 3 spatial extents (the rank).");
        }

        var spatial = shape.Spatial.Resolve(rank)!;
        for (var a = 0; a < rank; a++)
        {
            if (spatial[a] < 1)
            {
                ThrowHelper.ThrowShape($"shape.Spatial on axis {a} is {spatial[a]}; every spatial extent must be at least 1.");
            }
        }

        RequirePositive(shape.Batch, "shape.Batch");
        RequirePositive(shape.Heads, "shape.Heads");
        RequirePositive(shape.KvHeads, "shape.KvHeads");
        RequirePositive(shape.HeadDim, "shape.HeadDim");
        RequirePositive(shape.ValueDim, "shape.ValueDim");
        if (shape.AdditionalTokens < 0)
        {
            ThrowHelper.ThrowShape($"shape.AdditionalTokens is {shape.AdditionalTokens}; it must be 0 or more.");
        }

        if (shape.Heads % shape.KvHeads != 0)
        {
            ThrowHelper.ThrowShape(
                $"shape.Heads ({shape.Heads}) is not a multiple of shape.KvHeads ({shape.KvHeads}); GQA/MQA needs Heads % KvHeads == 0.");
        }

        var kernel = ResolveAxes(options.KernelSize, rank, "KernelSize", defaultValue: null);
        var stride = ResolveAxes(options.Stride, rank, "Stride", defaultValue: 1);
        var dilation = ResolveAxes(options.Dilation, rank, "Dilation", defaultValue: 1);
        var causal = options.Causal.Resolve(rank);
        if (causal is null)
        {
            ThrowHelper.ThrowOptions($"options.Causal has {options.Causal.Count} values but the problem has {Axes(rank)}.");
        }

        for (var a = 0; a < rank; a++)
        {
            if (kernel[a] < 2)
            {
                ThrowHelper.ThrowOptions(
                    $"options.KernelSize on axis {a} is {kernel[a]}; the kernel size must be at least 2 (1 is rejected, as in NATTEN).");
            }

            if (dilation[a] < 1)
            {
                ThrowHelper.ThrowOptions($"options.Dilation on axis {a} is {dilation[a]}; the dilation must be at least 1.");
            }

            if ((long)kernel[a] * dilation[a] > spatial[a])
            {
                ThrowHelper.ThrowOptions(
                    $"options.KernelSize × options.Dilation on axis {a} is {kernel[a]} × {dilation[a]} = {(long)kernel[a] * dilation[a]}, "
                  + $"more than the axis length {spatial[a]}; K·d must not exceed the axis length.");
            }

            if (stride[a] < 1 || stride[a] > kernel[a])
            {
                ThrowHelper.ThrowOptions(
                    $"options.Stride on axis {a} is {stride[a]}; the stride must be between 1 and the kernel size {kernel[a]}.");
            }
        }

        var scale = options.Scale ?? 1.0 / Math.Sqrt(shape.HeadDim);
        if (!double.IsFinite(scale) || scale <= 0)
        {
            ThrowHelper.ThrowOptions($"options.Scale is {scale}; the scale must be finite and positive.");
        }

        int[]? queryTile = null, keyTile = null;
        if (options.Tiles is { } tiles)
        {
            queryTile = ResolveTile(tiles.Query, rank, "Tiles.Query");
            keyTile = ResolveTile(tiles.KeyValue, rank, "Tiles.KeyValue");
        }

        try
        {
            return new AttentionProblem(shape, spatial, kernel, stride, dilation, causal, scale, elementType, queryTile, keyTile, options.AllowTf32);
        }
        catch (OverflowException)
        {
            ThrowHelper.ThrowShape($"The tensors of {shape} have more than {long.MaxValue} elements.");
            return null;
        }
    }

    /// <summary>Checks the spans of a forward call against a validated problem.</summary>
    public static void CheckForward<T>(AttentionProblem p, in ForwardTensors<T> t, bool hasAdditional)
        where T : unmanaged
    {
        CheckForwardLengths(
            p, new ForwardLengths(t.Query.Length, t.Key.Length, t.Value.Length, t.AdditionalKey.Length, t.AdditionalValue.Length,
                t.Output.Length, t.LogSumExp.IsEmpty ? null : t.LogSumExp.Length),
            hasAdditional);

        var regions = new RegionSet();
        regions.Add(Bytes(t.Query), "query");
        regions.Add(Bytes(t.Key), "key");
        regions.Add(Bytes(t.Value), "value");
        regions.Add(Bytes(t.AdditionalKey), "additionalKey");
        regions.Add(Bytes(t.AdditionalValue), "additionalValue");
        regions.AddDestination(Bytes(t.Output, p.OutputLength), "output");
        regions.AddDestination(Bytes(t.LogSumExp, p.LseLength), "logSumExp");
    }

    /// <summary>Checks the spans of a backward call against a validated problem.</summary>
    public static void CheckBackward<T>(AttentionProblem p, in BackwardTensors<T> t, bool hasAdditional)
        where T : unmanaged
    {
        CheckBackwardLengths(
            p,
            new BackwardLengths(
                t.Query.Length, t.Key.Length, t.Value.Length, t.AdditionalKey.Length, t.AdditionalValue.Length, t.Output.Length,
                t.LogSumExp.Length, t.OutputGrad.Length, t.QueryGrad.Length, t.KeyGrad.Length, t.ValueGrad.Length,
                t.AdditionalKeyGrad.Length, t.AdditionalValueGrad.Length),
            hasAdditional);

        var regions = new RegionSet();
        regions.Add(Bytes(t.Query), "query");
        regions.Add(Bytes(t.Key), "key");
        regions.Add(Bytes(t.Value), "value");
        regions.Add(Bytes(t.AdditionalKey), "additionalKey");
        regions.Add(Bytes(t.AdditionalValue), "additionalValue");
        regions.Add(Bytes(t.Output), "output");
        regions.Add(Bytes(t.LogSumExp), "logSumExp");
        regions.Add(Bytes(t.OutputGrad), "outputGrad");
        regions.AddDestination(Bytes(t.QueryGrad, p.QueryLength), "queryGrad");
        regions.AddDestination(Bytes(t.KeyGrad, p.KeyLength), "keyGrad");
        regions.AddDestination(Bytes(t.ValueGrad, p.ValueLength), "valueGrad");
        regions.AddDestination(Bytes(t.AdditionalKeyGrad, p.AdditionalKeyLength), "additionalKeyGrad");
        regions.AddDestination(Bytes(t.AdditionalValueGrad, p.AdditionalValueLength), "additionalValueGrad");
    }

    /// <summary>Checks the element counts of a forward call's tensors (spans or device tensors).</summary>
    public static void CheckForwardLengths(AttentionProblem p, in ForwardLengths l, bool hasAdditional)
    {
        CheckAdditionalOverload(p, hasAdditional);
        var rows = $"[B, {Extents(p)}";
        CheckInput(l.Query, p.QueryLength, "query", $"{rows}, H={p.Heads}, D={p.HeadDim}]");
        CheckInput(l.Key, p.KeyLength, "key", $"{rows}, Hkv={p.KvHeads}, D={p.HeadDim}]");
        CheckInput(l.Value, p.ValueLength, "value", $"{rows}, Hkv={p.KvHeads}, Dv={p.ValueDim}]");
        CheckInput(l.AdditionalKey, p.AdditionalKeyLength, "additionalKey", $"[B, {p.AdditionalTokens}, Hkv={p.KvHeads}, D={p.HeadDim}]");
        CheckInput(l.AdditionalValue, p.AdditionalValueLength, "additionalValue", $"[B, {p.AdditionalTokens}, Hkv={p.KvHeads}, Dv={p.ValueDim}]");
        CheckDestination(l.Output, p.OutputLength, "output", $"{rows}, H={p.Heads}, Dv={p.ValueDim}]");
        if (l.LogSumExp is { } lse)
        {
            CheckDestination(lse, p.LseLength, "logSumExp", $"{rows}, H={p.Heads}]");
        }
    }

    /// <summary>Checks the element counts of a backward call's tensors (spans or device tensors).</summary>
    public static void CheckBackwardLengths(AttentionProblem p, in BackwardLengths l, bool hasAdditional)
    {
        CheckAdditionalOverload(p, hasAdditional);
        var rows = $"[B, {Extents(p)}";
        CheckInput(l.Query, p.QueryLength, "query", $"{rows}, H={p.Heads}, D={p.HeadDim}]");
        CheckInput(l.Key, p.KeyLength, "key", $"{rows}, Hkv={p.KvHeads}, D={p.HeadDim}]");
        CheckInput(l.Value, p.ValueLength, "value", $"{rows}, Hkv={p.KvHeads}, Dv={p.ValueDim}]");
        CheckInput(l.AdditionalKey, p.AdditionalKeyLength, "additionalKey", $"[B, {p.AdditionalTokens}, Hkv={p.KvHeads}, D={p.HeadDim}]");
        CheckInput(l.AdditionalValue, p.AdditionalValueLength, "additionalValue", $"[B, {p.AdditionalTokens}, Hkv={p.KvHeads}, Dv={p.ValueDim}]");
        CheckInput(l.Output, p.OutputLength, "output", $"{rows}, H={p.Heads}, Dv={p.ValueDim}]");
        CheckInput(l.LogSumExp, p.LseLength, "logSumExp", $"{rows}, H={p.Heads}]");
        CheckInput(l.OutputGrad, p.OutputLength, "outputGrad", $"{rows}, H={p.Heads}, Dv={p.ValueDim}]");
        CheckDestination(l.QueryGrad, p.QueryLength, "queryGrad", $"{rows}, H={p.Heads}, D={p.HeadDim}]");
        CheckDestination(l.KeyGrad, p.KeyLength, "keyGrad", $"{rows}, Hkv={p.KvHeads}, D={p.HeadDim}]");
        CheckDestination(l.ValueGrad, p.ValueLength, "valueGrad", $"{rows}, Hkv={p.KvHeads}, Dv={p.ValueDim}]");
        CheckDestination(l.AdditionalKeyGrad, p.AdditionalKeyLength, "additionalKeyGrad", $"[B, {p.AdditionalTokens}, Hkv={p.KvHeads}, D={p.HeadDim}]");
        CheckDestination(l.AdditionalValueGrad, p.AdditionalValueLength, "additionalValueGrad", $"[B, {p.AdditionalTokens}, Hkv={p.KvHeads}, Dv={p.ValueDim}]");
    }

    /// <summary>Checks a merge of two partial attentions with <paramref name="valueDim"/>-wide rows.</summary>
    public static void CheckMerge<T>(
        ReadOnlySpan<T> output1, ReadOnlySpan<float> lse1, ReadOnlySpan<T> output2, ReadOnlySpan<float> lse2, int valueDim,
        Span<T> output, Span<float> logSumExp)
        where T : unmanaged
    {
        if (valueDim < 1)
        {
            ThrowHelper.ThrowArgument(nameof(valueDim), $"valueDim is {valueDim}; it must be at least 1.");
        }

        var rows = lse1.Length;
        var layout = $"[rows={rows}, Dv={valueDim}]";
        CheckInput(lse2.Length, rows, nameof(lse2), $"[rows={rows}], the length of lse1");
        CheckInput(output1.Length, (long)rows * valueDim, nameof(output1), layout);
        CheckInput(output2.Length, (long)rows * valueDim, nameof(output2), layout);
        CheckDestination(output.Length, (long)rows * valueDim, nameof(output), layout);
        CheckDestination(logSumExp.Length, rows, nameof(logSumExp), $"[rows={rows}]");

        // Writing a row over the same row of an input is safe (each row is read before it is written);
        // any other overlap would read already-merged values.
        var regions = new RegionSet();
        regions.Add(Bytes(output1), nameof(output1));
        regions.Add(Bytes(output2), nameof(output2));
        regions.Add(Bytes(lse1), nameof(lse1));
        regions.Add(Bytes(lse2), nameof(lse2));
        regions.AddDestination(Bytes(output, (long)rows * valueDim), nameof(output), allowExactAlias: [nameof(output1), nameof(output2)]);
        regions.AddDestination(Bytes(logSumExp, rows), nameof(logSumExp), allowExactAlias: [nameof(lse1), nameof(lse2)]);
    }

    private static void CheckAdditionalOverload(AttentionProblem p, bool hasAdditional)
    {
        if (!hasAdditional && p.AdditionalTokens != 0)
        {
            ThrowHelper.ThrowShape(
                $"shape.AdditionalTokens is {p.AdditionalTokens} but this overload takes no additional key/value; "
              + "use the overload with additionalKey and additionalValue.");
        }
    }

    private static int[] ResolveAxes(AxisValues values, int rank, string name, int? defaultValue)
    {
        if (!values.IsSpecified)
        {
            if (defaultValue is null)
            {
                ThrowHelper.ThrowOptions(name == "KernelSize"
                    ? "options.KernelSize is required (e.g. new NeighborhoodAttentionOptions(kernelSize: 7))."
                    : $"options.{name} is required.");
            }

            return Enumerable.Repeat(defaultValue.Value, rank).ToArray();
        }

        var resolved = values.Resolve(rank);
        if (resolved is null)
        {
            ThrowHelper.ThrowOptions(
                $"options.{name} has {values.Count} values ({values}) but the problem has {Axes(rank)}; give one value or one per axis.");
        }

        return resolved;
    }

    private static int[] ResolveTile(AxisValues values, int rank, string name)
    {
        var resolved = ResolveAxes(values, rank, name, defaultValue: null);
        for (var a = 0; a < rank; a++)
        {
            if (resolved[a] < 1)
            {
                ThrowHelper.ThrowOptions($"options.{name} on axis {a} is {resolved[a]}; tile extents must be at least 1.");
            }
        }

        return resolved;
    }

    private static void RequirePositive(int value, string name)
    {
        if (value < 1)
        {
            ThrowHelper.ThrowShape($"{name} is {value}; it must be at least 1.");
        }
    }

    private static string Axes(int rank) => rank == 1 ? "1 spatial axis" : $"{rank} spatial axes";

    private static string Extents(AttentionProblem p) => string.Join('x', p.Spatial);

    private static void CheckInput(long length, long expected, string name, string layout)
    {
        if (length != expected)
        {
            ThrowHelper.ThrowLength(name, length, expected, layout);
        }
    }

    private static void CheckDestination(long length, long needed, string name, string layout)
    {
        if (length < needed)
        {
            ThrowHelper.ThrowDestinationTooShort(name, length, needed, layout);
        }
    }

    private static ReadOnlySpan<byte> Bytes<T>(ReadOnlySpan<T> span)
        where T : unmanaged => MemoryMarshal.AsBytes(span);

    /// <summary>The part of a destination that will be written (it may be longer than needed).</summary>
    private static ReadOnlySpan<byte> Bytes<T>(Span<T> span, long used)
        where T : unmanaged => MemoryMarshal.AsBytes((ReadOnlySpan<T>)span[..(int)Math.Min(used, span.Length)]);
}
