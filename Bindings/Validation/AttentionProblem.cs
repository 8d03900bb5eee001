namespace Natten.Validation;

/// <summary>
/// A validated problem: every per-axis value resolved to the rank, defaults applied, and the
/// element count of every tensor. Only <see cref="ProblemValidator"/> creates one, so a backend
/// holding an <see cref="AttentionProblem"/> knows the rules of docs/SEMANTICS.md hold.
/// </summary>
internal sealed class AttentionProblem
{
    internal AttentionProblem(
        AttentionShape shape, int[] spatial, int[] kernelSize, int[] stride, int[] dilation, bool[] causal,
        double scale, ElementType elementType, int[]? queryTile = null, int[]? keyTile = null, bool allowTf32 = false)
    {
        AllowTf32 = allowTf32;
        QueryTile = queryTile;
        KeyTile = keyTile;
        Batch = shape.Batch;
        Heads = shape.Heads;
        KvHeads = shape.KvHeads;
        HeadDim = shape.HeadDim;
        ValueDim = shape.ValueDim;
        AdditionalTokens = shape.AdditionalTokens;
        Spatial = spatial;
        KernelSize = kernelSize;
        Stride = stride;
        Dilation = dilation;
        Causal = causal;
        Scale = scale;
        ElementType = elementType;
        Tokens = spatial.Aggregate(1L, (n, x) => checked(n * x));
        var rows = checked(Batch * Tokens);
        QueryLength = checked(rows * Heads * HeadDim);
        KeyLength = checked(rows * KvHeads * HeadDim);
        ValueLength = checked(rows * KvHeads * ValueDim);
        OutputLength = checked(rows * Heads * ValueDim);
        LseLength = checked(rows * Heads);
        AdditionalKeyLength = checked((long)Batch * AdditionalTokens * KvHeads * HeadDim);
        AdditionalValueLength = checked((long)Batch * AdditionalTokens * KvHeads * ValueDim);
    }

    public int Batch { get; }

    /// <summary>The float32 forward may run on TF32 tensor cores (<see cref="NeighborhoodAttentionOptions.AllowTf32"/>).</summary>
    public bool AllowTf32 { get; }

    public int Heads { get; }

    public int KvHeads { get; }

    public int HeadDim { get; }

    public int ValueDim { get; }

    public int AdditionalTokens { get; }

    public int[] Spatial { get; }

    public int[] KernelSize { get; }

    public int[] Stride { get; }

    public int[] Dilation { get; }

    public bool[] Causal { get; }

    public double Scale { get; }

    /// <summary>Fused query tile per axis, or null for the backend's default.</summary>
    public int[]? QueryTile { get; }

    /// <summary>Fused KV sub-tile per axis, or null for the backend's default.</summary>
    public int[]? KeyTile { get; }

    public ElementType ElementType { get; }

    public int Rank => Spatial.Length;

    public long Tokens { get; }

    public long QueryLength { get; }

    public long KeyLength { get; }

    public long ValueLength { get; }

    public long OutputLength { get; }

    public long LseLength { get; }

    public long AdditionalKeyLength { get; }

    public long AdditionalValueLength { get; }

    public override string ToString()
        => $"B={Batch} {string.Join('x', Spatial)} H={Heads}/{KvHeads} D={HeadDim} Dv={ValueDim} K={string.Join('x', KernelSize)} "
         + $"s={string.Join('x', Stride)} d={string.Join('x', Dilation)} causal={string.Join('x', Causal.Select(c => c ? 1 : 0))} {ElementType}";
}
