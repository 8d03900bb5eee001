namespace Natten.Cli;

/// <summary>The neighborhood options shared by every command: kernel size, stride, dilation, causal, backend.</summary>
internal static class ProblemOptions
{
    public const string Usage =
        """
          --kernel-size K     window size per axis, e.g. 7 or 7x5 (x-separated; one value = every axis)
          --stride S          stride per axis (default 1)
          --dilation D        dilation per axis (default 1)
          --causal C          causal masking per axis, 0/1, e.g. 0x1 (default 0)
        """;

    /// <summary>Reads the neighborhood options; <paramref name="defaultKernelSize"/> <c>null</c> makes --kernel-size required.</summary>
    public static NeighborhoodAttentionOptions Read(ArgumentReader args, AxisValues? defaultKernelSize)
    {
        var kernel = args.GetAxisValues("--kernel-size")
            ?? defaultKernelSize
            ?? throw CliException.Usage("--kernel-size is required.");
        var options = new NeighborhoodAttentionOptions(kernel);
        if (args.GetAxisValues("--stride") is { } stride)
        {
            options = options with { Stride = stride };
        }

        if (args.GetAxisValues("--dilation") is { } dilation)
        {
            options = options with { Dilation = dilation };
        }

        if (args.GetAxisFlags("--causal") is { } causal)
        {
            options = options with { Causal = causal };
        }

        return options;
    }

    /// <summary>The default spatial shape of <c>profile</c> and <c>simulate</c>: small enough that every backend, dense attention included, runs in a moment.</summary>
    public static readonly AxisValues DefaultShape = new(16, 16);

    /// <summary>Reads <c>--shape</c> (default <see cref="DefaultShape"/>) as explicit per-axis extents; the count is the rank.</summary>
    public static AxisValues ReadShape(ArgumentReader args)
    {
        var shape = args.GetAxisValues("--shape") ?? DefaultShape;
        int[] spatial = shape.IsUniform ? [shape[0]] : [.. Enumerable.Range(0, shape.Count).Select(a => shape[a])];
        return AxisValues.PerAxis(spatial);
    }

    /// <summary>Reads <c>--tiles Q/KV</c> into the options (fused backend tile shapes).</summary>
    public static NeighborhoodAttentionOptions ReadTiles(ArgumentReader args, NeighborhoodAttentionOptions options)
        => args.GetTiles("--tiles") is { } tiles ? options with { Tiles = tiles } : options;

    /// <summary>Per-axis text such as <c>7x7</c> for a problem of <paramref name="rank"/> axes.</summary>
    public static string Format(AxisValues values, int rank, int unspecified) => string.Join('x', Resolve(values, rank, unspecified));

    /// <summary>Per-axis causal flags as <c>0x1</c>.</summary>
    public static string Format(AxisFlags flags, int rank) => string.Join('x', Resolve(flags, rank).Select(c => c ? 1 : 0));

    /// <summary>The backend called <paramref name="name"/>, spelled as the library spells it.</summary>
    public static string ResolveBackend(string name)
    {
        var names = AttentionBackends.Names;
        return names.FirstOrDefault(n => string.Equals(n, name, StringComparison.OrdinalIgnoreCase))
            ?? throw CliException.Usage($"--backend: unknown backend '{name}'; known: {string.Join(", ", names)}.");
    }

    /// <summary>Per-axis values resolved for a problem of <paramref name="rank"/> axes (after the library validated them).</summary>
    public static int[] Resolve(AxisValues values, int rank, int unspecified)
        => [.. Enumerable.Range(0, rank).Select(a => !values.IsSpecified ? unspecified : values.IsUniform ? values[0] : values[a])];

    /// <summary>Per-axis flags resolved for a problem of <paramref name="rank"/> axes.</summary>
    public static bool[] Resolve(AxisFlags flags, int rank)
        => [.. Enumerable.Range(0, rank).Select(a => flags.IsUniform ? flags[0] : flags[a])];
}
