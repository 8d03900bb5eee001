using ILGPU.Runtime;
using Natten.Kernels.Common;
using Natten.Kernels.Cuda;
using Natten.Kernels.Fused;
using Natten.Kernels.Runtime;

namespace Natten.Backends;

/// <summary>
/// Fused neighborhood attention (Kernels/Fused): one tiled kernel with an online softmax; the
/// attention weights never exist in memory. The forward allocates no workspace; the backward only
/// the row term D (one float per query row) and is deterministic (no atomics).
/// </summary>
internal sealed class FusedBackend : DeviceBackend
{
    public override string Name => "fused";

    public override string Description => "fused tiled ILGPU kernels (FNA forward and deterministic backward, float32 math, online softmax)";

    public override long WorkspaceBytes(AttentionProblem problem, AttentionPass pass)
        => pass == AttentionPass.Forward ? 0 : FnaBackward.WorkspaceBytes(NaiveBackend.ToParams(problem));

    public override bool CanRunOn(ComputeDevice device, AttentionProblem problem, AttentionPass pass, out string reason)
    {
        var why = KernelCheck(device, problem, NaiveBackend.ToParams(problem), pass);
        if (why is not null)
        {
            reason = why;
            return false;
        }

        var bytes = TensorBytes(problem, pass) + WorkspaceBytes(problem, pass);
        if (bytes > device.Accelerator.MemorySize)
        {
            reason = $"the tensors need {bytes / 1e9:0.##} GB on {device.Name} with {device.Accelerator.MemorySize / 1e9:0.##} GB";
            return false;
        }

        reason = string.Empty;
        return true;
    }

    /// <summary>
    /// Why no fused kernel runs <paramref name="pass"/> of the problem on <paramref name="device"/>, or null — judged on the
    /// kernel the call takes: the tensor-core kernels for 16-bit storage where <see cref="TensorCoreTile"/> fits (for the
    /// backward also <see cref="FnaTensorCoreBackward.Check"/>), the TF32 forward for float32 with
    /// <see cref="AttentionProblem.AllowTf32"/> where <see cref="Tf32Tile"/> fits, otherwise the float32-math kernels with
    /// <see cref="TileShape"/>. So a tile that only the tensor-core kernel can hold is not refused for the float32
    /// kernel's limits.
    /// </summary>
    internal static string? KernelCheck(ComputeDevice device, AttentionProblem problem, ProblemParams p, AttentionPass pass)
    {
        if (problem.ElementType != ElementType.Float32 && TensorCoreTile(device, problem, p) is { } tensorCore
            && (pass == AttentionPass.Forward || FnaTensorCoreBackward.Check(device, p, tensorCore) is null))
        {
            return null;
        }

        if (pass == AttentionPass.Forward && problem.ElementType == ElementType.Float32 && problem.AllowTf32 && Tf32Tile(device, problem, p) is not null)
        {
            return null;
        }

        var tile = TileShape(problem, p);
        return FnaForward.Check(device, p, tile) ?? (pass == AttentionPass.Backward ? FnaBackward.Check(device, p, tile) : null);
    }

    /// <summary>
    /// float32 storage: float32 math, or TF32 tensor cores when the caller allowed it
    /// (<see cref="NeighborhoodAttentionOptions.AllowTf32"/>) and <see cref="Tf32Tile"/> fits the problem.
    /// </summary>
    public override void Forward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceForward<float> views)
    {
        var p = NaiveBackend.ToParams(problem);
        if (problem.AllowTf32 && Tf32Tile(device, problem, p) is { } tile)
        {
            FnaTf32.Forward(
                device, stream, p, tile, views.Query, views.Key, views.Value, views.AdditionalKey, views.AdditionalValue, views.Output, views.LogSumExp);
            return;
        }

        Forward<float, Float32Storage>(device, stream, problem, views);
    }

    /// <summary>The tile shape for the TF32 kernel (the requested one, or its default), or null when it cannot run the problem.</summary>
    internal static FnaTileShape? Tf32Tile(ComputeDevice device, AttentionProblem problem, ProblemParams p)
    {
        var tile = problem.QueryTile is not null ? TileShape(problem, p) : FnaTf32.Default(problem.Rank, Math.Max(problem.HeadDim, problem.ValueDim));
        return FnaTf32.Check(device, p, tile) is null ? tile : null;
    }

    /// <summary>
    /// Half storage runs on the tensor-core kernel when the head dims and tile shape fit it (see
    /// <see cref="TensorCoreTile"/>), otherwise on the float32-math kernel.
    /// </summary>
    public override void Forward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceForward<ILGPU.Half> views)
    {
        var p = NaiveBackend.ToParams(problem);
        if (TensorCoreTile(device, problem, p) is { } tile)
        {
            FnaTensorCore.Forward<Fp16Format>(
                device, stream, p, tile, views.Query.Cast<ushort>(), views.Key.Cast<ushort>(), views.Value.Cast<ushort>(),
                views.AdditionalKey.Cast<ushort>(), views.AdditionalValue.Cast<ushort>(), views.Output.Cast<ushort>(), views.LogSumExp);
            return;
        }

        Forward<ILGPU.Half, Float16Storage>(device, stream, problem, views);
    }

    /// <summary>
    /// bfloat16 on the tensor-core kernel when it fits the problem; otherwise the float32-math kernel reading and
    /// writing bf16 storage (inputs widened exactly, output rounded to nearest even).
    /// </summary>
    public override void ForwardBFloat16(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceForward<ushort> views)
    {
        var p = NaiveBackend.ToParams(problem);
        if (TensorCoreTile(device, problem, p) is { } tile)
        {
            FnaTensorCore.Forward<Bf16Format>(
                device, stream, p, tile, views.Query, views.Key, views.Value, views.AdditionalKey, views.AdditionalValue, views.Output, views.LogSumExp);
            return;
        }

        Forward<ushort, BFloat16Storage>(device, stream, problem, views);
    }

    /// <summary>bfloat16 backward on tensor cores when it fits the problem; otherwise the float32-math kernels on bf16 storage.</summary>
    public override void BackwardBFloat16(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceBackward<ushort> views)
    {
        var p = NaiveBackend.ToParams(problem);
        if (TensorCoreTile(device, problem, p) is { } tile && FnaTensorCoreBackward.Check(device, p, tile) is null)
        {
            FnaTensorCoreBackward.Backward<Bf16Format, BFloat16Storage>(
                device, stream, p, tile, views.Query, views.Key, views.Value, views.AdditionalKey, views.AdditionalValue, views.Output,
                views.LogSumExp, views.OutputGrad, views.QueryGrad, views.KeyGrad, views.ValueGrad, views.AdditionalKeyGrad, views.AdditionalValueGrad);
            return;
        }

        Backward<ushort, BFloat16Storage>(device, stream, problem, views);
    }

    /// <summary>
    /// The tile shape for the tensor-core kernel (the requested one, or its default), or null when that
    /// kernel cannot run the problem (head dims not multiples of 16/8, tile not a multiple of 16, …).
    /// </summary>
    internal static FnaTileShape? TensorCoreTile(ComputeDevice device, AttentionProblem problem, ProblemParams p)
    {
        var tile = problem.QueryTile is not null ? TileShape(problem, p) : FnaTensorCore.Default(problem.Rank, Math.Max(problem.HeadDim, problem.ValueDim));
        return FnaTensorCore.Check(device, p, tile) is null ? tile : null;
    }

    public override void Backward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceBackward<float> views)
        => Backward<float, Float32Storage>(device, stream, problem, views);

    /// <summary>Half storage: the tensor-core backward when it fits the problem, else the float32-math kernels.</summary>
    public override void Backward(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceBackward<ILGPU.Half> views)
    {
        var p = NaiveBackend.ToParams(problem);
        if (TensorCoreTile(device, problem, p) is { } tile && FnaTensorCoreBackward.Check(device, p, tile) is null)
        {
            FnaTensorCoreBackward.Backward<Fp16Format, Float16BitsStorage>(
                device, stream, p, tile, views.Query.Cast<ushort>(), views.Key.Cast<ushort>(), views.Value.Cast<ushort>(),
                views.AdditionalKey.Cast<ushort>(), views.AdditionalValue.Cast<ushort>(), views.Output.Cast<ushort>(), views.LogSumExp,
                views.OutputGrad.Cast<ushort>(), views.QueryGrad.Cast<ushort>(), views.KeyGrad.Cast<ushort>(), views.ValueGrad.Cast<ushort>(),
                views.AdditionalKeyGrad.Cast<ushort>(), views.AdditionalValueGrad.Cast<ushort>());
            return;
        }

        Backward<ILGPU.Half, Float16Storage>(device, stream, problem, views);
    }

    /// <summary>The requested tile shape (padded to three axes) or the default for the rank and head dims.</summary>
    internal static FnaTileShape TileShape(AttentionProblem problem, ProblemParams p)
    {
        if (problem.QueryTile is { } q && problem.KeyTile is { } k)
        {
            var pad = 3 - problem.Rank;
            int At(int[] values, int axis) => axis < pad ? 1 : values[axis - pad];
            return new FnaTileShape(At(q, 0), At(q, 1), At(q, 2), At(k, 0), At(k, 1), At(k, 2));
        }

        return FnaTileShape.Default(problem.Rank, problem.HeadDim, problem.ValueDim, p.N0, p.N1, p.N2);
    }

    private static void Backward<TD, TS>(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceBackward<TD> v)
        where TD : unmanaged
        where TS : struct, IElementStorage<TD>
    {
        var p = NaiveBackend.ToParams(problem);
        FnaBackward.Backward<TD, TS>(
            device, stream, p, TileShape(problem, p), v.Query, v.Key, v.Value, v.AdditionalKey, v.AdditionalValue, v.Output, v.LogSumExp,
            v.OutputGrad, v.QueryGrad, v.KeyGrad, v.ValueGrad, v.AdditionalKeyGrad, v.AdditionalValueGrad);
    }

    private static void Forward<TD, TS>(ComputeDevice device, AcceleratorStream stream, AttentionProblem problem, in DeviceForward<TD> v)
        where TD : unmanaged
        where TS : struct, IElementStorage<TD>
    {
        var p = NaiveBackend.ToParams(problem);
        FnaForward.Forward<TD, TS>(
            device, stream, p, TileShape(problem, p), v.Query, v.Key, v.Value, v.AdditionalKey, v.AdditionalValue, v.Output, v.LogSumExp);
    }
}
