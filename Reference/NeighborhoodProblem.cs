namespace Natten.Reference;

/// <summary>
/// A neighborhood attention problem as plain arrays, one entry per spatial axis. The Reference
/// does not validate parameters beyond what it needs to stay in bounds: it is given valid problems.
/// </summary>
public sealed class NeighborhoodProblem
{
    /// <summary>Batch size.</summary>
    public required int Batch { get; init; }

    /// <summary>Spatial extent per axis (rank = length, 1 to 3).</summary>
    public required int[] Spatial { get; init; }

    /// <summary>Query heads.</summary>
    public required int Heads { get; init; }

    /// <summary>Key/value heads (divides <see cref="Heads"/>).</summary>
    public required int KvHeads { get; init; }

    /// <summary>Query/key head dimension.</summary>
    public required int HeadDim { get; init; }

    /// <summary>Value head dimension.</summary>
    public required int ValueDim { get; init; }

    /// <summary>Kernel size per axis.</summary>
    public required int[] KernelSize { get; init; }

    /// <summary>Stride per axis.</summary>
    public required int[] Stride { get; init; }

    /// <summary>Dilation per axis.</summary>
    public required int[] Dilation { get; init; }

    /// <summary>Causal flag per axis.</summary>
    public required bool[] Causal { get; init; }

    /// <summary>Score scale; <c>null</c> means <c>1 / sqrt(HeadDim)</c>.</summary>
    public double? Scale { get; init; }

    /// <summary>Number of additional key/value tokens.</summary>
    public int AdditionalTokens { get; init; }

    /// <summary>Number of spatial axes.</summary>
    public int Rank => Spatial.Length;

    /// <summary>Number of tokens (product of the spatial extents).</summary>
    public int Tokens
    {
        get
        {
            var n = 1;
            foreach (var x in Spatial)
            {
                n = checked(n * x);
            }

            return n;
        }
    }

    /// <summary>The flattened sizes of this problem.</summary>
    public AttentionDims Dims => new(
        Batch, Tokens, Heads, KvHeads, HeadDim, ValueDim, Scale ?? 1.0 / Math.Sqrt(HeadDim), AdditionalTokens);

    /// <summary>Row-major coordinates of flattened token index <paramref name="token"/>.</summary>
    public int[] Coordinates(int token)
    {
        var c = new int[Rank];
        for (var a = Rank - 1; a >= 0; a--)
        {
            c[a] = token % Spatial[a];
            token /= Spatial[a];
        }

        return c;
    }

    /// <summary>
    /// Whether the query at flattened token <paramref name="queryToken"/> may attend to the key at
    /// flattened token <paramref name="keyToken"/>: the AND over axes of <see cref="NeighborhoodRule.AxisAllows"/>.
    /// </summary>
    public bool Allows(int queryToken, int keyToken)
    {
        var qc = Coordinates(queryToken);
        var kc = Coordinates(keyToken);
        for (var a = 0; a < Rank; a++)
        {
            if (!NeighborhoodRule.AxisAllows(qc[a], kc[a], Spatial[a], KernelSize[a], Stride[a], Dilation[a], Causal[a]))
            {
                return false;
            }
        }

        return true;
    }
}
