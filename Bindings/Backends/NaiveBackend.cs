using System.Numerics;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Common;
using Natten.Kernels.Naive;
using Natten.Kernels.Runtime;

namespace Natten.Backends;

/// <summary>
/// NATTEN's original unfused path on an ILGPU accelerator (Kernels/Naive): scores, softmax and
/// weighted values as three kernels with a <c>[rows, ∏K]</c> weight tensor in between. Host spans
/// are copied to the default accelerator (see <see cref="DeviceRuntime"/>) and back; device tensors
/// are used in place.
/// </summary>
internal sealed class NaiveBackend : IDeviceAttentionBackend
{
    public string Name => "naive";

    public string Description => "unfused ILGPU kernels (QK, softmax, AV) with a [rows, ∏K] weight tensor";

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

    /// <summary>Whether the problem's tensors and workspaces fit the device.</summary>
    public bool CanRunOn(ComputeDevice device, AttentionProblem problem, AttentionPass pass, out string reason)
    {
        var p = ToParams(problem);
        var workspace = pass == AttentionPass.Forward ? NaiveAttention.ForwardWorkspaceBytes(p, wantsLse: true) : NaiveAttention.BackwardWorkspaceBytes(p);
        var element = problem.ElementType == ElementType.Float16 ? 2 : 4;
        var tensors = (element * 2 * (problem.QueryLength + problem.KeyLength + problem.ValueLength + problem.OutputLength)) + (4 * problem.LseLength);
        if (workspace + tensors > device.Accelerator.MemorySize)
        {
            reason = $"needs {(workspace + tensors) / 1e9:0.##} GB ({workspace / 1e9:0.##} GB of ∏K weights) on {device.Name} "
                   + $"with {device.Accelerator.MemorySize / 1e9:0.##} GB";
            return false;
        }

        reason = string.Empty;
        return true;
    }

    public void Forward<T>(AttentionProblem problem, in ForwardTensors<T> tensors)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        if (typeof(T) == typeof(float))
        {
            HostForward<float, Float32Storage, T>(problem, tensors);
        }
        else
        {
            HostForward<ILGPU.Half, Float16Storage, T>(problem, tensors);
        }
    }

    public void Backward<T>(AttentionProblem problem, in BackwardTensors<T> tensors)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        if (typeof(T) == typeof(float))
        {
            HostBackward<float, Float32Storage, T>(problem, tensors);
        }
        else
        {
            HostBackward<ILGPU.Half, Float16Storage, T>(problem, tensors);
        }
    }

    public void Forward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceForward<float> views)
        => DeviceForward<float, Float32Storage>(device, stream, problem, views);

    public void Forward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceForward<ILGPU.Half> views)
        => DeviceForward<ILGPU.Half, Float16Storage>(device, stream, problem, views);

    public void Backward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceBackward<float> views)
        => DeviceBackward<float, Float32Storage>(device, stream, problem, views);

    public void Backward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceBackward<ILGPU.Half> views)
        => DeviceBackward<ILGPU.Half, Float16Storage>(device, stream, problem, views);

    internal static NaiveParams ToParams(AttentionProblem p) => new(
        p.Batch, p.Heads, p.KvHeads, p.HeadDim, p.ValueDim, p.AdditionalTokens, p.Spatial, p.KernelSize, p.Stride, p.Dilation, p.Causal, p.Scale);

    private static void DeviceForward<TD, TS>(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceForward<TD> v)
        where TD : unmanaged
        where TS : struct, IElementStorage<TD>
        => NaiveAttention.Forward<TD, TS>(
            device, stream, ToParams(problem), v.Query, v.Key, v.Value, v.AdditionalKey, v.AdditionalValue, v.Output, v.LogSumExp);

    private static void DeviceBackward<TD, TS>(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceBackward<TD> v)
        where TD : unmanaged
        where TS : struct, IElementStorage<TD>
        => NaiveAttention.Backward<TD, TS>(
            device, stream, ToParams(problem), v.Query, v.Key, v.Value, v.AdditionalKey, v.AdditionalValue, v.Output, v.LogSumExp,
            v.OutputGrad, v.QueryGrad, v.KeyGrad, v.ValueGrad, v.AdditionalKeyGrad, v.AdditionalValueGrad);

    private static void HostForward<TD, TS, T>(AttentionProblem problem, in ForwardTensors<T> t)
        where TD : unmanaged
        where TS : struct, IElementStorage<TD>
        where T : unmanaged
    {
        var device = DeviceRuntime.Default;
        using var q = Upload<TD, T>(device, t.Query);
        using var k = Upload<TD, T>(device, t.Key);
        using var v = Upload<TD, T>(device, t.Value);
        using var ak = Upload<TD, T>(device, t.AdditionalKey);
        using var av = Upload<TD, T>(device, t.AdditionalValue);
        using var o = device.Accelerator.Allocate1D<TD>(problem.OutputLength);
        using var lse = device.Accelerator.Allocate1D<float>(t.LogSumExp.IsEmpty ? 0 : problem.LseLength);
        DeviceForward<TD, TS>(
            device, device.Accelerator.DefaultStream, problem,
            new DeviceForward<TD>(q.View, k.View, v.View, ak.View, av.View, o.View, lse.View));
        Download(o, MemoryMarshal.Cast<T, TD>(t.Output));
        Download(lse, t.LogSumExp);
    }

    private static void HostBackward<TD, TS, T>(AttentionProblem problem, in BackwardTensors<T> t)
        where TD : unmanaged
        where TS : struct, IElementStorage<TD>
        where T : unmanaged
    {
        var device = DeviceRuntime.Default;
        var accelerator = device.Accelerator;
        using var q = Upload<TD, T>(device, t.Query);
        using var k = Upload<TD, T>(device, t.Key);
        using var v = Upload<TD, T>(device, t.Value);
        using var ak = Upload<TD, T>(device, t.AdditionalKey);
        using var av = Upload<TD, T>(device, t.AdditionalValue);
        using var o = Upload<TD, T>(device, t.Output);
        using var lse = Upload<float, float>(device, t.LogSumExp);
        using var dO = Upload<TD, T>(device, t.OutputGrad);
        using var dq = accelerator.Allocate1D<TD>(problem.QueryLength);
        using var dk = accelerator.Allocate1D<TD>(problem.KeyLength);
        using var dv = accelerator.Allocate1D<TD>(problem.ValueLength);
        using var dak = accelerator.Allocate1D<TD>(problem.AdditionalKeyLength);
        using var dav = accelerator.Allocate1D<TD>(problem.AdditionalValueLength);
        DeviceBackward<TD, TS>(
            device, accelerator.DefaultStream, problem,
            new DeviceBackward<TD>(q.View, k.View, v.View, ak.View, av.View, o.View, lse.View, dO.View, dq.View, dk.View, dv.View, dak.View, dav.View));
        Download(dq, MemoryMarshal.Cast<T, TD>(t.QueryGrad));
        Download(dk, MemoryMarshal.Cast<T, TD>(t.KeyGrad));
        Download(dv, MemoryMarshal.Cast<T, TD>(t.ValueGrad));
        Download(dak, MemoryMarshal.Cast<T, TD>(t.AdditionalKeyGrad));
        Download(dav, MemoryMarshal.Cast<T, TD>(t.AdditionalValueGrad));
    }

    private static MemoryBuffer1D<TD, Stride1D.Dense> Upload<TD, T>(ComputeDevice device, ReadOnlySpan<T> source)
        where TD : unmanaged
        where T : unmanaged
    {
        var buffer = device.Accelerator.Allocate1D<TD>(source.Length);
        if (!source.IsEmpty)
        {
            ArrayView<TD> view = buffer.View;
            view.CopyFromCPU(MemoryMarshal.Cast<T, TD>(source));
        }

        return buffer;
    }

    /// <summary>Copies a whole buffer into the start of <paramref name="destination"/> (which validation made long enough).</summary>
    private static void Download<TD>(MemoryBuffer1D<TD, Stride1D.Dense> buffer, Span<TD> destination)
        where TD : unmanaged
    {
        if (buffer.Length > 0)
        {
            ArrayView<TD> view = buffer.View;
            view.CopyToCPU(destination[..(int)buffer.Length]);
        }
    }
}
