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

    public override float Bias(int batch, int head, int query, int key)
    {
        var plane = ((batches == 1 ? 0 : batch) * heads) + (heads == 1 ? 0 : head);
        return values[((((long)plane * queryTokens) + query) * keyTokens) + key];
    }

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

    public override float Bias(int batch, int head, int query, int key)
    {
        var index = Struct(default).IndexOf(head, query, key);
        return index < 0 ? 0f : table[index];
    }

    private protected override DeviceBias Upload(ComputeDevice device)
    {
        var buffers = new DeviceBuffers();
        var bias = Struct(buffers.Upload<float>(device, table));
        return new DeviceBias(new StructSource<RelativePositionBias>(bias), buffers);
    }

    private RelativePositionBias Struct(ILGPU.ArrayView<float> view)
        => new(view, extents[1], extents[2], kernel[0], kernel[1], kernel[2], dilation[0], dilation[1], dilation[2]);
}
