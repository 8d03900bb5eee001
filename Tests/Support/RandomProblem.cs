using Natten.Reference;

namespace Natten.Tests.Support;

/// <summary>
/// A random valid problem within the bounds of docs/SEMANTICS.md: rank 1–3, odd sizes, even
/// kernels, stride, dilation with a remainder, causal mixes, GQA, D ≠ Dv, additional tokens.
/// Kept tiny so the O(N²) Reference stays fast.
/// </summary>
internal sealed record RandomProblem(AttentionShape Shape, NeighborhoodAttentionOptions Options)
{
    public static RandomProblem Create(int seed, int maxTokens = 96, bool allowAdditional = true)
    {
        var rng = new Random(seed);
        var rank = rng.Next(1, 4);
        var spatial = new int[rank];
        var kernel = new int[rank];
        var stride = new int[rank];
        var dilation = new int[rank];
        var causal = new bool[rank];
        var perAxisMax = rank switch { 1 => maxTokens, 2 => (int)Math.Sqrt(maxTokens), _ => (int)Math.Cbrt(maxTokens) };
        for (var a = 0; a < rank; a++)
        {
            spatial[a] = rng.Next(2, Math.Max(3, perAxisMax + 1));
            dilation[a] = rng.Next(4) == 0 ? rng.Next(1, (spatial[a] / 2) + 1) : 1;
            var maxKernel = spatial[a] / dilation[a];
            kernel[a] = rng.Next(2, maxKernel + 1);
            stride[a] = rng.Next(3) == 0 ? rng.Next(1, kernel[a] + 1) : 1;
            causal[a] = rng.Next(3) == 0;
        }

        int[] headChoices = [1, 2, 3, 4];
        var kvHeads = headChoices[rng.Next(headChoices.Length)];
        var heads = kvHeads * rng.Next(1, 3);
        int[] dims = [1, 3, 8, 24, 40, 64];
        var headDim = dims[rng.Next(dims.Length)];
        var valueDim = rng.Next(2) == 0 ? headDim : dims[rng.Next(dims.Length)];
        var shape = new AttentionShape(rng.Next(1, 3), AxisValues.PerAxis(spatial), heads, headDim)
        {
            KvHeads = kvHeads,
            ValueDim = valueDim,
            AdditionalTokens = allowAdditional && rng.Next(4) == 0 ? rng.Next(1, 4) : 0,
        };
        var options = new NeighborhoodAttentionOptions(AxisValues.PerAxis(kernel))
        {
            Stride = AxisValues.PerAxis(stride),
            Dilation = AxisValues.PerAxis(dilation),
            Causal = rank switch
            {
                1 => new AxisFlags(causal[0]),
                2 => new AxisFlags(causal[0], causal[1]),
                _ => new AxisFlags(causal[0], causal[1], causal[2]),
            },
            Scale = rng.Next(3) == 0 ? 0.1 + rng.NextDouble() : null,
        };
        return new RandomProblem(shape, options);
    }

    /// <summary>The same problem for the Reference (written from the public values, not from Bindings internals).</summary>
    public NeighborhoodProblem ToReference()
    {
        var rank = Shape.Rank;
        return new NeighborhoodProblem
        {
            Batch = Shape.Batch,
            Spatial = Axes(Shape.Spatial, rank),
            Heads = Shape.Heads,
            KvHeads = Shape.KvHeads,
            HeadDim = Shape.HeadDim,
            ValueDim = Shape.ValueDim,
            KernelSize = Axes(Options.KernelSize, rank),
            Stride = Axes(Options.Stride, rank),
            Dilation = Axes(Options.Dilation, rank),
            Causal = Enumerable.Range(0, rank).Select(a => Options.Causal[a]).ToArray(),
            Scale = Options.Scale,
            AdditionalTokens = Shape.AdditionalTokens,
        };
    }

    public override string ToString() => $"{Shape} K={Options.KernelSize} s={Options.Stride} d={Options.Dilation} causal={Options.Causal} scale={Options.Scale}";

    private static int[] Axes(AxisValues values, int rank) => Enumerable.Range(0, rank).Select(a => values.IsSpecified ? values[a] : 1).ToArray();
}
