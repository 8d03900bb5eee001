using System.Numerics;
using ILGPU.Runtime;
using Natten.Kernels.Runtime;

namespace Natten.BlockSparse;

/// <summary>
/// One way of computing block-sparse attention: receives validated problems and spans
/// (<see cref="ProblemValidator.ValidateBlockSparse"/>) and only computes; <see cref="CanRun"/> says why not.
/// </summary>
internal interface IBlockSparseBackend
{
    /// <summary>Name used in options, the CLI and error messages (lower case).</summary>
    string Name { get; }

    /// <summary>One line on what this backend is.</summary>
    string Description { get; }

    /// <summary>Whether this backend can run <paramref name="problem"/>; otherwise a one-line reason.</summary>
    bool CanRun(BlockSparseProblem problem, AttentionPass pass, out string reason);

    void Forward<T>(BlockSparseProblem problem, in ForwardTensors<T> tensors)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>;

    /// <summary>dQ, dK, dV, and the bias gradient when <see cref="BlockSparseProblem.BiasGradient"/> (into <c>tensors.BiasGradient</c>).</summary>
    void Backward<T>(BlockSparseProblem problem, in BackwardTensors<T> tensors)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>;
}

/// <summary>A block-sparse backend that also runs on tensors already in an accelerator's memory.</summary>
internal interface IDeviceBlockSparseBackend : IBlockSparseBackend
{
    bool CanRunOn(ComputeDevice device, BlockSparseProblem problem, AttentionPass pass, out string reason);

    void Forward<TD>(ComputeDevice device, AcceleratorStream stream, BlockSparseProblem problem, in DeviceForward<TD> views)
        where TD : unmanaged;

    /// <param name="device">The device.</param>
    /// <param name="stream">Its stream.</param>
    /// <param name="problem">The validated problem.</param>
    /// <param name="views">The tensors.</param>
    /// <param name="biasGradient">The bias gradient destination; empty when <see cref="BlockSparseProblem.BiasGradient"/> is false.</param>
    void Backward<TD>(ComputeDevice device, AcceleratorStream stream, BlockSparseProblem problem, in DeviceBackward<TD> views, ILGPU.ArrayView<float> biasGradient)
        where TD : unmanaged;
}
