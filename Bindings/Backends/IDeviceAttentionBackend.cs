using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Runtime;

namespace Natten.Backends;

/// <summary>Device views of one forward call (element type as the kernels see it: float or ILGPU.Half).</summary>
internal readonly record struct DeviceForward<TD>(
    ArrayView<TD> Query, ArrayView<TD> Key, ArrayView<TD> Value, ArrayView<TD> AdditionalKey, ArrayView<TD> AdditionalValue,
    ArrayView<TD> Output, ArrayView<float> LogSumExp)
    where TD : unmanaged;

/// <summary>Device views of one backward call.</summary>
internal readonly record struct DeviceBackward<TD>(
    ArrayView<TD> Query, ArrayView<TD> Key, ArrayView<TD> Value, ArrayView<TD> AdditionalKey, ArrayView<TD> AdditionalValue,
    ArrayView<TD> Output, ArrayView<float> LogSumExp, ArrayView<TD> OutputGrad,
    ArrayView<TD> QueryGrad, ArrayView<TD> KeyGrad, ArrayView<TD> ValueGrad, ArrayView<TD> AdditionalKeyGrad, ArrayView<TD> AdditionalValueGrad)
    where TD : unmanaged;

/// <summary>A backend that can also run on tensors already in an accelerator's memory.</summary>
internal interface IDeviceAttentionBackend : IAttentionBackend
{
    /// <summary>First on a GPU; after the CPU backend when the default accelerator is ILGPU's CPU accelerator.</summary>
    int IAttentionBackend.Preference => BackendPreference.OfDeviceBackend();

    /// <summary>Whether it can run the problem on <paramref name="device"/>; otherwise why not.</summary>
    bool CanRunOn(ComputeDevice device, AttentionProblem problem, AttentionPass pass, out string reason);

    void Forward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceForward<float> views);

    void Forward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceForward<ILGPU.Half> views);

    void Backward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceBackward<float> views);

    void Backward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceBackward<ILGPU.Half> views);

    /// <summary>Forward pass with bfloat16 storage: the views hold bf16 bit patterns.</summary>
    void ForwardBFloat16(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceForward<ushort> views);

    /// <summary>Backward pass with bfloat16 storage: the views hold bf16 bit patterns (LSE float32).</summary>
    void BackwardBFloat16(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceBackward<ushort> views);
}
