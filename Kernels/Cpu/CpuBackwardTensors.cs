namespace Natten.Kernels.Cpu;

/// <summary>
/// Everything the backward passes read and write, as pointers into pinned memory: the caller's
/// tensors (heads-last), the per-call transposed copies (<c>[B, heads, C, N]</c>), Δ and the LSE
/// (both <c>[B, N, H]</c>, and transposed to <c>[B, H, N]</c>), the packed additional tokens and the
/// slots of their partial gradients.
/// </summary>
internal readonly unsafe struct CpuBackwardTensors
{
    public float* Query { get; init; }

    public float* Key { get; init; }

    public float* OutputGrad { get; init; }

    public float* Lse { get; init; }

    public float* Delta { get; init; }

    public float* LseT { get; init; }

    public float* DeltaT { get; init; }

    public float* QueryT { get; init; }

    public float* KeyT { get; init; }

    public float* ValueT { get; init; }

    public float* OutputGradT { get; init; }

    public float* AdditionalKeyT { get; init; }

    public float* AdditionalValueT { get; init; }

    public float* AdditionalKeyRows { get; init; }

    public float* AdditionalSlots { get; init; }

    public float* QueryGrad { get; init; }

    public float* KeyGrad { get; init; }

    public float* ValueGrad { get; init; }
}
