using System.Numerics;
using System.Runtime.InteropServices;
using Natten.Kernels.Common;
using Natten.Kernels.Cpu;

namespace Natten.Backends;

/// <summary>
/// The SIMD, multi-threaded CPU kernels of Kernels/Cpu (plain C#, no ILGPU): fused forward with an
/// online softmax, and a deterministic backward. Runs any valid problem in float32 or Half storage;
/// the automatic choice when no GPU is present.
/// </summary>
internal sealed class CpuBackend : IAttentionBackend
{
    public string Name => "cpu";

    public string Description
        => $"SIMD CPU kernels ({CpuOptions.Default.ResolvedVectorBits}-bit vectors, {Environment.ProcessorCount} threads): "
         + "tiled fused forward, deterministic backward";

    public int Preference => BackendPreference.Cpu;

    /// <summary>Every valid problem in float32 or Half, unless a per-call buffer would exceed a .NET array.</summary>
    public bool CanRun(AttentionProblem problem, AttentionPass pass, out string reason)
        => CpuAttention.CanRun(ToParams(problem), pass == AttentionPass.Backward, out reason);

    public void Forward<T>(AttentionProblem problem, in ForwardTensors<T> tensors)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        var p = ToParams(problem);
        if (typeof(T) == typeof(float))
        {
            CpuAttention.Forward(
                p, Cast<T, float>(tensors.Query), Cast<T, float>(tensors.Key), Cast<T, float>(tensors.Value),
                Cast<T, float>(tensors.AdditionalKey), Cast<T, float>(tensors.AdditionalValue),
                MemoryMarshal.Cast<T, float>(tensors.Output), tensors.LogSumExp);
        }
        else
        {
            CpuAttention.Forward(
                p, Cast<T, Half>(tensors.Query), Cast<T, Half>(tensors.Key), Cast<T, Half>(tensors.Value),
                Cast<T, Half>(tensors.AdditionalKey), Cast<T, Half>(tensors.AdditionalValue),
                MemoryMarshal.Cast<T, Half>(tensors.Output), tensors.LogSumExp);
        }
    }

    public void Backward<T>(AttentionProblem problem, in BackwardTensors<T> tensors)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        var p = ToParams(problem);
        if (typeof(T) == typeof(float))
        {
            CpuAttention.Backward(
                p, Cast<T, float>(tensors.Query), Cast<T, float>(tensors.Key), Cast<T, float>(tensors.Value),
                Cast<T, float>(tensors.AdditionalKey), Cast<T, float>(tensors.AdditionalValue),
                Cast<T, float>(tensors.Output), tensors.LogSumExp, Cast<T, float>(tensors.OutputGrad),
                MemoryMarshal.Cast<T, float>(tensors.QueryGrad), MemoryMarshal.Cast<T, float>(tensors.KeyGrad),
                MemoryMarshal.Cast<T, float>(tensors.ValueGrad), MemoryMarshal.Cast<T, float>(tensors.AdditionalKeyGrad),
                MemoryMarshal.Cast<T, float>(tensors.AdditionalValueGrad));
        }
        else
        {
            CpuAttention.Backward(
                p, Cast<T, Half>(tensors.Query), Cast<T, Half>(tensors.Key), Cast<T, Half>(tensors.Value),
                Cast<T, Half>(tensors.AdditionalKey), Cast<T, Half>(tensors.AdditionalValue),
                Cast<T, Half>(tensors.Output), tensors.LogSumExp, Cast<T, Half>(tensors.OutputGrad),
                MemoryMarshal.Cast<T, Half>(tensors.QueryGrad), MemoryMarshal.Cast<T, Half>(tensors.KeyGrad),
                MemoryMarshal.Cast<T, Half>(tensors.ValueGrad), MemoryMarshal.Cast<T, Half>(tensors.AdditionalKeyGrad),
                MemoryMarshal.Cast<T, Half>(tensors.AdditionalValueGrad));
        }
    }

    internal static ProblemParams ToParams(AttentionProblem p) => new(
        p.Batch, p.Heads, p.KvHeads, p.HeadDim, p.ValueDim, p.AdditionalTokens, p.Spatial, p.KernelSize, p.Stride, p.Dilation, p.Causal, p.Scale);

    private static ReadOnlySpan<TTo> Cast<TFrom, TTo>(ReadOnlySpan<TFrom> span)
        where TFrom : unmanaged
        where TTo : unmanaged
        => MemoryMarshal.Cast<TFrom, TTo>(span);
}
