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
