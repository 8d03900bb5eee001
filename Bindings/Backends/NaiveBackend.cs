using ILGPU.Runtime;
using Natten.Kernels.Common;
using Natten.Kernels.Naive;
using Natten.Kernels.Runtime;

namespace Natten.Backends;

/// <summary>
/// NATTEN's original unfused path on an ILGPU accelerator (Kernels/Naive): scores, softmax and
/// weighted values as three kernels with a <c>[rows, ∏K]</c> weight tensor in between.
/// </summary>
internal sealed class NaiveBackend : DeviceBackend
{
    public override string Name => "naive";

    public override string Description => "unfused ILGPU kernels (QK, softmax, AV) with a [rows, ∏K] weight tensor";

    /// <summary>The ∏K weights (and, with additional tokens, the merge buffers; in the backward also dS).</summary>
    public override long WorkspaceBytes(AttentionProblem problem, AttentionPass pass)
        => pass == AttentionPass.Forward
            ? NaiveAttention.ForwardWorkspaceBytes(ToParams(problem), wantsLse: true)
            : NaiveAttention.BackwardWorkspaceBytes(ToParams(problem));

    /// <summary>Whether the problem's tensors and workspaces fit the device.</summary>
    public override bool CanRunOn(ComputeDevice device, AttentionProblem problem, AttentionPass pass, out string reason)
    {
        var workspace = WorkspaceBytes(problem, pass);
        var tensors = TensorBytes(problem, pass);
        if (workspace + tensors > device.Accelerator.MemorySize)
        {
            reason = $"needs {(workspace + tensors) / 1e9:0.##} GB ({workspace / 1e9:0.##} GB of ∏K weights) on {device.Name} "
                   + $"with {device.Accelerator.MemorySize / 1e9:0.##} GB";
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
        => Backward<float, Float32Storage>(device, stream, problem, views);

    public override void Backward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceBackward<ILGPU.Half> views)
        => Backward<ILGPU.Half, Float16Storage>(device, stream, problem, views);

    public override void ForwardBFloat16(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceForward<ushort> views)
        => Forward<ushort, BFloat16Storage>(device, stream, problem, views);

    public override void BackwardBFloat16(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceBackward<ushort> views)
        => Backward<ushort, BFloat16Storage>(device, stream, problem, views);

    internal static ProblemParams ToParams(AttentionProblem p) => new(
        p.Batch, p.Heads, p.KvHeads, p.HeadDim, p.ValueDim, p.AdditionalTokens, p.Spatial, p.KernelSize, p.Stride, p.Dilation, p.Causal, p.Scale);

    private static void Forward<TD, TS>(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceForward<TD> v)
        where TD : unmanaged
        where TS : struct, IElementStorage<TD>
        => NaiveAttention.Forward<TD, TS>(
            device, stream, ToParams(problem), v.Query, v.Key, v.Value, v.AdditionalKey, v.AdditionalValue, v.Output, v.LogSumExp);

    private static void Backward<TD, TS>(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceBackward<TD> v)
        where TD : unmanaged
        where TS : struct, IElementStorage<TD>
        => NaiveAttention.Backward<TD, TS>(
            device, stream, ToParams(problem), v.Query, v.Key, v.Value, v.AdditionalKey, v.AdditionalValue, v.Output, v.LogSumExp,
            v.OutputGrad, v.QueryGrad, v.KeyGrad, v.ValueGrad, v.AdditionalKeyGrad, v.AdditionalValueGrad);
}
