using System.Numerics;
using System.Runtime.InteropServices;
using ILGPU.Runtime;
using Natten.Kernels.Runtime;

namespace Natten.Backends;

/// <summary>
/// What every ILGPU backend shares: host spans are copied to the default accelerator
/// (<see cref="DeviceRuntime.Default"/>), run through the device entry points, and copied back.
/// Subclasses implement only <see cref="CanRunOn"/> and the device-view passes.
/// </summary>
internal abstract class DeviceBackend : IDeviceAttentionBackend, IBFloat16Backend
{
    public abstract string Name { get; }

    public abstract string Description { get; }

    public bool CanRun(AttentionProblem problem, AttentionPass pass, out string reason)
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

    /// <summary>Workspace bytes beyond the call's tensors (the default: none).</summary>
    public virtual long WorkspaceBytes(AttentionProblem problem, AttentionPass pass) => 0;

    /// <summary>The host path's device memory: the call's tensors plus the workspace.</summary>
    public long? DeviceMemoryBytes(AttentionProblem problem, AttentionPass pass) => TensorBytes(problem, pass) + WorkspaceBytes(problem, pass);

    public abstract bool CanRunOn(ComputeDevice device, AttentionProblem problem, AttentionPass pass, out string reason);

    public abstract void Forward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceForward<float> views);

    public abstract void Forward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceForward<ILGPU.Half> views);

    public abstract void Backward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceBackward<float> views);

    public abstract void Backward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceBackward<ILGPU.Half> views);

    public abstract void ForwardBFloat16(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceForward<ushort> views);

    public abstract void BackwardBFloat16(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceBackward<ushort> views);

    /// <summary>bf16 host spans: copied to the device as bits, run by the device bf16 pass, copied back.</summary>
    public void ForwardBFloat16(AttentionProblem problem, in ForwardTensors<ushort> tensors) => HostForward<ushort, ushort>(problem, tensors);

    /// <summary>bf16 host spans for the backward pass.</summary>
    public void BackwardBFloat16(AttentionProblem problem, in BackwardTensors<ushort> tensors) => HostBackward<ushort, ushort>(problem, tensors);

    public void Forward<T>(AttentionProblem problem, in ForwardTensors<T> tensors)
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

    public void Backward<T>(AttentionProblem problem, in BackwardTensors<T> tensors)
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

    /// <summary>Device memory the host path needs for the call's tensors.</summary>
    protected static long TensorBytes(AttentionProblem problem, AttentionPass pass)
    {
        var element = problem.ElementType == ElementType.Float32 ? 4 : 2;
        var once = problem.QueryLength + problem.KeyLength + problem.ValueLength + problem.AdditionalKeyLength + problem.AdditionalValueLength
                 + problem.OutputLength;
        return pass == AttentionPass.Forward
            ? (element * once) + (4 * problem.LseLength)
            : (element * ((2 * once) + problem.OutputLength)) + (4 * problem.LseLength);
    }

    private void HostForward<TD, T>(AttentionProblem problem, in ForwardTensors<T> t)
        where TD : unmanaged
        where T : unmanaged
    {
        var device = DeviceRuntime.Default;
        using var q = HostTransfer.Upload<TD, T>(device, t.Query);
        using var k = HostTransfer.Upload<TD, T>(device, t.Key);
        using var v = HostTransfer.Upload<TD, T>(device, t.Value);
        using var ak = HostTransfer.Upload<TD, T>(device, t.AdditionalKey);
        using var av = HostTransfer.Upload<TD, T>(device, t.AdditionalValue);
        using var o = device.Accelerator.Allocate1D<TD>(problem.OutputLength);
        using var lse = device.Accelerator.Allocate1D<float>(t.LogSumExp.IsEmpty ? 0 : problem.LseLength);
        var views = new DeviceForward<TD>(q.View, k.View, v.View, ak.View, av.View, o.View, lse.View);
        var stream = device.Accelerator.DefaultStream;
        if (views is DeviceForward<float> f)
        {
            Forward(device, stream, problem, f);
        }
        else if (views is DeviceForward<ILGPU.Half> h)
        {
            Forward(device, stream, problem, h);
        }
        else if (views is DeviceForward<ushort> b)
        {
            ForwardBFloat16(device, stream, problem, b);
        }

        stream.Synchronize();
        HostTransfer.Download(o, MemoryMarshal.Cast<T, TD>(t.Output));
        HostTransfer.Download(lse, t.LogSumExp);
    }

    private void HostBackward<TD, T>(AttentionProblem problem, in BackwardTensors<T> t)
        where TD : unmanaged
        where T : unmanaged
    {
        var device = DeviceRuntime.Default;
        var accelerator = device.Accelerator;
        using var q = HostTransfer.Upload<TD, T>(device, t.Query);
        using var k = HostTransfer.Upload<TD, T>(device, t.Key);
        using var v = HostTransfer.Upload<TD, T>(device, t.Value);
        using var ak = HostTransfer.Upload<TD, T>(device, t.AdditionalKey);
        using var av = HostTransfer.Upload<TD, T>(device, t.AdditionalValue);
        using var o = HostTransfer.Upload<TD, T>(device, t.Output);
        using var lse = HostTransfer.Upload<float, float>(device, t.LogSumExp);
        using var dO = HostTransfer.Upload<TD, T>(device, t.OutputGrad);
        using var dq = accelerator.Allocate1D<TD>(problem.QueryLength);
        using var dk = accelerator.Allocate1D<TD>(problem.KeyLength);
        using var dv = accelerator.Allocate1D<TD>(problem.ValueLength);
        using var dak = accelerator.Allocate1D<TD>(problem.AdditionalKeyLength);
        using var dav = accelerator.Allocate1D<TD>(problem.AdditionalValueLength);
        var views = new DeviceBackward<TD>(
            q.View, k.View, v.View, ak.View, av.View, o.View, lse.View, dO.View, dq.View, dk.View, dv.View, dak.View, dav.View);
        var stream = accelerator.DefaultStream;
        if (views is DeviceBackward<float> f)
        {
            Backward(device, stream, problem, f);
        }
        else if (views is DeviceBackward<ILGPU.Half> h)
        {
            Backward(device, stream, problem, h);
        }
        else if (views is DeviceBackward<ushort> b)
        {
            BackwardBFloat16(device, stream, problem, b);
        }

        stream.Synchronize();
        HostTransfer.Download(dq, MemoryMarshal.Cast<T, TD>(t.QueryGrad));
        HostTransfer.Download(dk, MemoryMarshal.Cast<T, TD>(t.KeyGrad));
        HostTransfer.Download(dv, MemoryMarshal.Cast<T, TD>(t.ValueGrad));
        HostTransfer.Download(dak, MemoryMarshal.Cast<T, TD>(t.AdditionalKeyGrad));
        HostTransfer.Download(dav, MemoryMarshal.Cast<T, TD>(t.AdditionalValueGrad));
    }
}
