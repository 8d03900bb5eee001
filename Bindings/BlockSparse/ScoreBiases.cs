using Natten.Kernels.BlockSparse;
using Natten.Kernels.Runtime;

namespace Natten.BlockSparse;

/// <summary>A dense bias tensor (see <see cref="ScoreBias.Dense"/>).</summary>
internal sealed class DenseScoreBias(float[] values, int queryTokens, int keyTokens, int heads, int batches) : ScoreBias
{
    public override int Batches => batches;

    public override int Heads => heads;

    public override int QueryTokens => queryTokens;

    public override int KeyTokens => keyTokens;

    public override int Length => values.Length;

    internal override string Layout => $"[batches={batches}, heads={heads}, Nq={queryTokens}, Nk={keyTokens}]";

    public override float Bias(int batch, int head, int query, int key) => values[IndexOf(batch, head, query, key)];

    internal override long IndexOf(int batch, int head, int query, int key)
    {
        var plane = ((batches == 1 ? 0 : batch) * heads) + (heads == 1 ? 0 : head);
        return ((((long)plane * queryTokens) + query) * keyTokens) + key;
    }

    /// <summary>Not broadcast: dS straight into the gradient; broadcast: block-sparse workspace and a fixed-order sum.</summary>
    internal override BiasGradientTarget GradientTarget(ILGPU.ArrayView<float> gradient, in BlockSparseShape shape, int entries)
        => new(
            batches == shape.Batch && heads == shape.Heads ? BiasGradientKind.Direct : BiasGradientKind.Pairs,
            gradient, batches, heads, 0, entries);

    private protected override DeviceBias Upload(ComputeDevice device)
    {
        var buffers = new DeviceBuffers();
        var bias = new DenseBias(buffers.Upload<float>(device, values), queryTokens, keyTokens, batches, heads);
        return new DeviceBias(new StructSource<DenseBias>(bias), buffers);
    }
}

/// <summary>NATTEN's relative positional bias (see <see cref="ScoreBias.RelativePosition"/>); axes padded to three.</summary>
internal sealed class RelativePositionScoreBias(float[] table, int heads, int[] extents, int[] kernel, int[] dilation) : ScoreBias
{
    public override int Heads => heads;

    public override int QueryTokens => extents[0] * extents[1] * extents[2];

    public override int KeyTokens => QueryTokens;

    public override int Length => table.Length;

    internal override string Layout
        => $"[heads={heads}, 2·K−1 per axis for K={string.Join('x', kernel.SkipWhile(k => k == 1).DefaultIfEmpty(1))}]";

    public override float Bias(int batch, int head, int query, int key)
    {
        var index = IndexOf(batch, head, query, key);
        return index < 0 ? 0f : table[index];
    }

    internal override long IndexOf(int batch, int head, int query, int key) => Struct(default).IndexOf(head, query, key);

    /// <summary>Per-query-row partial sums of the table, then one fixed-order sum per table entry.</summary>
    internal override BiasGradientTarget GradientTarget(ILGPU.ArrayView<float> gradient, in BlockSparseShape shape, int entries)
        => new(BiasGradientKind.Table, gradient, 1, heads, table.Length / heads, entries);

    private protected override DeviceBias Upload(ComputeDevice device)
    {
        var buffers = new DeviceBuffers();
        var bias = Struct(buffers.Upload<float>(device, table));
        return new DeviceBias(new StructSource<RelativePositionBias>(bias), buffers);
    }

    private RelativePositionBias Struct(ILGPU.ArrayView<float> view)
        => new(view, heads, extents[1], extents[2], kernel[0], kernel[1], kernel[2], dilation[0], dilation[1], dilation[2]);
}
