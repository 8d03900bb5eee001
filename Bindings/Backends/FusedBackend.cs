using ILGPU.Runtime;
using Natten.Kernels.Common;
using Natten.Kernels.Fused;
using Natten.Kernels.Runtime;

namespace Natten.Backends;

/// <summary>
/// Fused neighborhood attention (Kernels/Fused): one tiled kernel with an online softmax; the
/// attention weights never exist in memory and no workspace is allocated. Forward only so far.
/// </summary>
internal sealed class FusedBackend : DeviceBackend
{
    public override string Name => "fused";

    public override string Description => "fused tiled ILGPU kernel (FNA forward, float32 math, online softmax, no workspace)";

    public override bool CanRunOn(ComputeDevice device, AttentionProblem problem, AttentionPass pass, out string reason)
    {
        if (pass == AttentionPass.Backward)
        {
            reason = "the fused backward pass is not implemented yet";
            return false;
        }

        var p = NaiveBackend.ToParams(problem);
        var why = FnaForward.Check(device, p, TileShape(problem, p));
        if (why is not null)
        {
            reason = why;
            return false;
        }

        if (TensorBytes(problem, pass) > device.Accelerator.MemorySize)
        {
            reason = $"the tensors need {TensorBytes(problem, pass) / 1e9:0.##} GB on {device.Name} with {device.Accelerator.MemorySize / 1e9:0.##} GB";
            return false;
        }

        reason = string.Empty;
        return true;
    }

    public override void Forward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceForward<float> views)
        => Forward<float, Float32Storage>(device, stream, problem, views);

    public override void Forward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceForward<ILGPU.Half> views)
        => Forward<ILGPU.Half, Float16Storage>(device, stream, problem, views);

    public override void Backward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceBackward<float> views)
        => throw new NotSupportedException("The fused backward pass is not implemented yet.");

    public override void Backward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceBackward<ILGPU.Half> views)
        => throw new NotSupportedException("The fused backward pass is not implemented yet.");

    /// <summary>The requested tile shape (padded to three axes) or the default for the rank and head dims.</summary>
    internal static FnaTileShape TileShape(AttentionProblem problem, ProblemParams p)
    {
        if (problem.QueryTile is { } q && problem.KeyTile is { } k)
        {
            var pad = 3 - problem.Rank;
            int At(int[] values, int axis) => axis < pad ? 1 : values[axis - pad];
            return new FnaTileShape(At(q, 0), At(q, 1), At(q, 2), At(k, 0), At(k, 1), At(k, 2));
        }

        return FnaTileShape.Default(problem.Rank, problem.HeadDim, problem.ValueDim, p.N0, p.N1, p.N2);
    }

    private static void Forward<TD, TS>(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceForward<TD> v)
        where TD : unmanaged
        where TS : struct, IElementStorage<TD>
    {
        var p = NaiveBackend.ToParams(problem);
        FnaForward.Forward<TD, TS>(
            device, stream, p, TileShape(problem, p), v.Query, v.Key, v.Value, v.AdditionalKey, v.AdditionalValue, v.Output, v.LogSumExp);
    }
}
