using ILGPU;
using System.Numerics;
using System.Runtime.InteropServices;
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
internal sealed class FusedBlockSparseBackend : IDeviceBlockSparseBackend
{
    public string Name => "fused";

    public string Description => "fused block-sparse ILGPU kernels (forward and deterministic backward, float32 math, online softmax; fp16/bf16 forward on tensor cores when D % 16 == 0 and Dv % 8 == 0)";

    public bool CanRun(BlockSparseProblem problem, AttentionPass pass, out string reason)
    {
        ComputeDevice device;
        try
        {
            device = DeviceRuntime.Default;
        }
        catch (InvalidOperationException ex)
        {
            reason = ex.Message;
            return false;
        }

        return CanRunOn(device, problem, pass, out reason);
    }

    public bool CanRunOn(ComputeDevice device, BlockSparseProblem problem, AttentionPass pass, out string reason)
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

    public void Forward<TD>(ComputeDevice device, AcceleratorStream stream, BlockSparseProblem problem, in DeviceForward<TD> views)
        where TD : unmanaged
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

    public void Backward<TD>(ComputeDevice device, AcceleratorStream stream, BlockSparseProblem problem, in DeviceBackward<TD> views, ArrayView<float> biasGradient)
        where TD : unmanaged
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

    public void Forward<T>(BlockSparseProblem problem, in ForwardTensors<T> tensors)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        if (typeof(T) == typeof(float))
        {
            HostForward<float, T>(problem, tensors);
        }
        else
        {
            HostForward<ILGPU.Half, T>(problem, tensors);
        }
    }

    public void Backward<T>(BlockSparseProblem problem, in BackwardTensors<T> tensors)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        if (typeof(T) == typeof(float))
        {
            HostBackward<float, T>(problem, tensors);
        }
        else
        {
            HostBackward<ILGPU.Half, T>(problem, tensors);
        }
    }

    /// <summary>bfloat16 storage (ushort bits): the kernels load bf16 and compute in float32.</summary>
    public void ForwardBFloat16(BlockSparseProblem problem, in ForwardTensors<ushort> tensors) => HostForward<ushort, ushort>(problem, tensors);

    /// <summary>bfloat16 storage (ushort bits) for the backward.</summary>
    public void BackwardBFloat16(BlockSparseProblem problem, in BackwardTensors<ushort> tensors) => HostBackward<ushort, ushort>(problem, tensors);

    private void HostForward<TD, T>(BlockSparseProblem problem, in ForwardTensors<T> t)
        where TD : unmanaged
        where T : unmanaged
    {
        var device = DeviceRuntime.Default;
        using var q = HostTransfer.Upload<TD, T>(device, t.Query);
        using var k = HostTransfer.Upload<TD, T>(device, t.Key);
        using var v = HostTransfer.Upload<TD, T>(device, t.Value);
        using var o = device.Accelerator.Allocate1D<TD>(problem.OutputLength);
        using var lse = device.Accelerator.Allocate1D<float>(t.LogSumExp.IsEmpty ? 0 : problem.LseLength);
        var stream = device.Accelerator.DefaultStream;
        Forward(device, stream, problem, new DeviceForward<TD>(q.View, k.View, v.View, default, default, o.View, lse.View));
        stream.Synchronize();
        HostTransfer.Download(o, MemoryMarshal.Cast<T, TD>(t.Output));
        HostTransfer.Download(lse, t.LogSumExp);
    }

    private void HostBackward<TD, T>(BlockSparseProblem problem, in BackwardTensors<T> t)
        where TD : unmanaged
        where T : unmanaged
    {
        var device = DeviceRuntime.Default;
        var accelerator = device.Accelerator;
        using var q = HostTransfer.Upload<TD, T>(device, t.Query);
        using var k = HostTransfer.Upload<TD, T>(device, t.Key);
        using var v = HostTransfer.Upload<TD, T>(device, t.Value);
        using var o = HostTransfer.Upload<TD, T>(device, t.Output);
        using var lse = HostTransfer.Upload<float, float>(device, t.LogSumExp);
        using var dO = HostTransfer.Upload<TD, T>(device, t.OutputGrad);
        using var dq = accelerator.Allocate1D<TD>(problem.QueryLength);
        using var dk = accelerator.Allocate1D<TD>(problem.KeyLength);
        using var dv = accelerator.Allocate1D<TD>(problem.ValueLength);
        using var dBias = accelerator.Allocate1D<float>(problem.BiasGradient ? problem.Bias!.Length : 0);
        var stream = accelerator.DefaultStream;
        Backward(
            device, stream, problem,
            new DeviceBackward<TD>(q.View, k.View, v.View, default, default, o.View, lse.View, dO.View, dq.View, dk.View, dv.View, default, default),
            dBias.View);
        stream.Synchronize();
        HostTransfer.Download(dq, MemoryMarshal.Cast<T, TD>(t.QueryGrad));
        HostTransfer.Download(dk, MemoryMarshal.Cast<T, TD>(t.KeyGrad));
        HostTransfer.Download(dv, MemoryMarshal.Cast<T, TD>(t.ValueGrad));
        if (problem.BiasGradient)
        {
            HostTransfer.Download(dBias, t.BiasGradient);
        }
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

    /// <summary>The bias gradient request of a problem as the launcher sees it (none unless asked for).</summary>
    private static BiasGradientTarget BiasTarget(BlockSparseProblem problem, ArrayView<float> gradient)
        => problem.BiasGradient ? problem.Bias!.GradientTarget(gradient, problem.Shape, problem.Mask.BlockCount) : BiasGradientTarget.None;
}
