using System.Numerics;
using System.Runtime.InteropServices;
using ILGPU.Runtime;
using Natten.Kernels.BlockSparse;
using Natten.Kernels.Runtime;

namespace Natten.BlockSparse;

/// <summary>
/// What every ILGPU block-sparse backend shares (as <see cref="Natten.Backends.DeviceBackend"/> for neighborhood
/// attention): host spans — float, Half or bf16 bits — are copied to the default accelerator, run through the
/// device passes, and copied back, with the bias gradient when one is asked for. Subclasses implement only
/// <see cref="CanRunOn"/> and the device passes.
/// </summary>
internal abstract class DeviceBlockSparseBackend : IDeviceBlockSparseBackend
{
    public abstract string Name { get; }

    public abstract string Description { get; }

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

    public abstract bool CanRunOn(ComputeDevice device, BlockSparseProblem problem, AttentionPass pass, out string reason);

    /// <summary>The bias gradient request of a problem as the launchers see it (none unless asked for).</summary>
    protected static BiasGradientTarget BiasTarget(BlockSparseProblem problem, ILGPU.ArrayView<float> gradient)
        => problem.BiasGradient ? problem.Bias!.GradientTarget(gradient, problem.Shape, problem.Mask.BlockCount) : BiasGradientTarget.None;

    public abstract void Forward<TD>(ComputeDevice device, AcceleratorStream stream, BlockSparseProblem problem, in DeviceForward<TD> views)
        where TD : unmanaged;

    public abstract void Backward<TD>(ComputeDevice device, AcceleratorStream stream, BlockSparseProblem problem, in DeviceBackward<TD> views, ILGPU.ArrayView<float> biasGradient)
        where TD : unmanaged;

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

    /// <summary>bfloat16 storage (ushort bits) through the device passes' bf16 path.</summary>
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
}
