using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.BlockSparse;
using Natten.Kernels.Common;
using Natten.Kernels.Cuda;
using Natten.Kernels.Runtime;

namespace Natten.BlockSparse;

/// <summary>
/// The fused block-sparse kernels (Kernels/BlockSparse) on the default ILGPU accelerator: only the
/// listed blocks are visited, full blocks without a mask. The forward allocates no workspace; the
/// backward the row term (one float per query row), plus the bias gradient's workspace when one is asked
/// for (<see cref="BiasGradientTarget.WorkspaceFloats"/>), and is deterministic (no atomics).
/// </summary>
internal sealed class FusedBlockSparseBackend : DeviceBlockSparseBackend
{
    public override string Name => "fused";

    public override string Description => "fused block-sparse ILGPU kernels (forward and deterministic backward, float32 math, online softmax; fp16/bf16 forward on tensor cores when D % 16 == 0 and Dv % 8 == 0)";

    public override bool CanRunOn(ComputeDevice device, BlockSparseProblem problem, AttentionPass pass, out string reason)
    {
        var p = problem.ToParams();

        // A 16-bit forward the tensor-core kernel takes needs only that kernel's limits (TensorCoreTile checks them).
        var tensorCoreForward = pass == AttentionPass.Forward && problem.ElementType != ElementType.Float32 && TensorCoreTile(device, problem) is not null;
        var why = tensorCoreForward ? null : BlockSparseLauncher.Check(device, p, problem.Tiles(), pass == AttentionPass.Backward);
        if (why is not null)
        {
            reason = why;
            return false;
        }

        var element = problem.ElementType == ElementType.Float32 ? 4 : 2;
        var once = problem.QueryLength + problem.KeyLength + problem.ValueLength + problem.OutputLength;
        var bytes = pass == AttentionPass.Forward
            ? (element * once) + (4 * problem.LseLength)
            : (element * ((2 * once) + problem.OutputLength)) + (4 * problem.LseLength)
              + BlockSparseLauncher.BackwardWorkspaceBytes(p, BiasTarget(problem, default))
              + (problem.BiasGradient ? 4L * problem.Bias!.Length : 0);
        if (bytes > device.Accelerator.MemorySize)
        {
            reason = $"the tensors need {bytes / 1e9:0.##} GB on {device.Name} with {device.Accelerator.MemorySize / 1e9:0.##} GB";
            return false;
        }

        reason = string.Empty;
        return true;
    }

    public override void Forward<TD>(ComputeDevice device, AcceleratorStream stream, BlockSparseProblem problem, in DeviceForward<TD> views)
    {
        var mask = problem.Mask.OnDevice(device);
        var bias = problem.Bias?.OnDevice(device) ?? BlockSparseDispatch.NoBias;
        var (p, tiles) = (problem.ToParams(), problem.Tiles());
        IBlockSparsePass pass = views switch
        {
            DeviceForward<float> v => new BlockSparseForwardPass<float, Float32Storage>(
                device, stream, p, tiles, mask.Forward, v.Query, v.Key, v.Value, v.Output, v.LogSumExp),
            DeviceForward<ILGPU.Half> v when TensorCoreTile(device, problem) is { } tile => new BlockSparseTensorCorePass<Fp16Format>(
                device, stream, p, tile, mask.Forward, v.Query.Cast<ushort>(), v.Key.Cast<ushort>(), v.Value.Cast<ushort>(), v.Output.Cast<ushort>(), v.LogSumExp),
            DeviceForward<ILGPU.Half> v => new BlockSparseForwardPass<ILGPU.Half, Float16Storage>(
                device, stream, p, tiles, mask.Forward, v.Query, v.Key, v.Value, v.Output, v.LogSumExp),
            DeviceForward<ushort> v when TensorCoreTile(device, problem) is { } tile => new BlockSparseTensorCorePass<Bf16Format>(
                device, stream, p, tile, mask.Forward, v.Query, v.Key, v.Value, v.Output, v.LogSumExp),
            DeviceForward<ushort> v => new BlockSparseForwardPass<ushort, BFloat16Storage>(
                device, stream, p, tiles, mask.Forward, v.Query, v.Key, v.Value, v.Output, v.LogSumExp),
            _ => throw new NotSupportedException($"Element type {typeof(TD).Name} is not supported."),
        };
        BlockSparseDispatch.Run(mask.ElementMask, bias, pass);
    }

    public override void Backward<TD>(ComputeDevice device, AcceleratorStream stream, BlockSparseProblem problem, in DeviceBackward<TD> views, ArrayView<float> biasGradient)
    {
        var mask = problem.Mask.OnDevice(device);
        var bias = problem.Bias?.OnDevice(device) ?? BlockSparseDispatch.NoBias;
        var (p, tiles) = (problem.ToParams(), problem.Tiles());
        var target = BiasTarget(problem, biasGradient);
        IBlockSparsePass pass = views switch
        {
            DeviceBackward<float> v => new BlockSparseBackwardPass<float, Float32Storage>(
                device, stream, p, tiles, mask.Forward, mask.Transposed, v.Query, v.Key, v.Value, v.Output, v.LogSumExp,
                v.OutputGrad, v.QueryGrad, v.KeyGrad, v.ValueGrad, target),
            DeviceBackward<ILGPU.Half> v => new BlockSparseBackwardPass<ILGPU.Half, Float16Storage>(
                device, stream, p, tiles, mask.Forward, mask.Transposed, v.Query, v.Key, v.Value, v.Output, v.LogSumExp,
                v.OutputGrad, v.QueryGrad, v.KeyGrad, v.ValueGrad, target),
            DeviceBackward<ushort> v => new BlockSparseBackwardPass<ushort, BFloat16Storage>(
                device, stream, p, tiles, mask.Forward, mask.Transposed, v.Query, v.Key, v.Value, v.Output, v.LogSumExp,
                v.OutputGrad, v.QueryGrad, v.KeyGrad, v.ValueGrad, target),
            _ => throw new NotSupportedException($"Element type {typeof(TD).Name} is not supported."),
        };
        BlockSparseDispatch.Run(mask.ElementMask, bias, pass);
    }

    /// <summary>
    /// The tile of the tensor-core forward (<see cref="BlockSparseTensorCore"/>) for a 16-bit problem on
    /// <paramref name="device"/>, or null when that kernel cannot run it (float32 storage, D % 16 ≠ 0,
    /// Dv % 8 ≠ 0, a requested <see cref="BlockSparseOptions.Tiling"/> that is not a multiple of 16 once
    /// cut to the block sizes, shared memory, warp width): the forward then runs the float32-math kernel.
    /// </summary>
    internal static BlockSparseTensorCoreTile? TensorCoreTile(ComputeDevice device, BlockSparseProblem problem)
    {
        if (problem.ElementType is not (ElementType.Float16 or ElementType.BFloat16))
        {
            return null;
        }

        var p = problem.ToParams();
        var tile = BlockSparseTensorCore.Tile(p, problem.Tiling?.Queries, problem.Tiling?.Keys);
        return BlockSparseTensorCore.Check(device, p, tile) is null ? tile : null;
    }
}
