using ILGPU.Runtime;
using Natten.Kernels.BlockSparse;
using Natten.Kernels.Common;
using Natten.Kernels.Runtime;

namespace Natten.BlockSparse;

/// <summary>
/// The unfused block-sparse baseline on the default ILGPU accelerator (Kernels/BlockSparse/NaiveBlockSparseKernels):
/// dense scores with −∞ for forbidden pairs, a row softmax, dense <c>P V</c>, through an
/// <c>[batches, H, Nq, Nk]</c> float workspace. Its cost does not depend on the pattern's sparsity; it is
/// what the fused kernels' speedup is measured against. The backward recomputes P from the saved LSE and
/// holds P and dS as two such workspaces; it is deterministic (one writer per gradient element, fixed order). A
/// score-bias gradient takes each chunk's dS through the fused backward's sinks and reductions.
/// </summary>
/// <param name="workspaceCap">Most bytes of score workspace per launch sequence (more batch entries run in turn); tests lower it.</param>
internal sealed class NaiveBlockSparseBackend(long workspaceCap = NaiveBlockSparseLauncher.WorkspaceBudgetBytes) : DeviceBlockSparseBackend
{
    public override string Name => "naive";

    public override string Description => "unfused block-sparse ILGPU baseline (dense masked scores, softmax, P·V through an [H, Nq, Nk] workspace; dense backward)";

    public override bool CanRunOn(ComputeDevice device, BlockSparseProblem problem, AttentionPass pass, out string reason)
    {
        var p = problem.ToParams();
        var backward = pass == AttentionPass.Backward;
        var element = problem.ElementType == ElementType.Float32 ? 4 : 2;
        var once = problem.QueryLength + problem.KeyLength + problem.ValueLength + problem.OutputLength;
        var tensors = backward
            ? (element * ((2 * once) + problem.OutputLength)) + (8 * problem.LseLength)
              + (problem.BiasGradient ? 4L * (problem.Bias!.Length + BiasTarget(problem, default).WorkspaceFloats(p)) : 0)
            : (element * once) + (4 * problem.LseLength);
        var budget = NaiveBlockSparseLauncher.Budget(device.Accelerator.MemorySize, workspaceCap);
        var matrices = backward ? 2 : 1; // the backward holds P and dS
        var perBatch = matrices * NaiveBlockSparseLauncher.BatchWorkspaceBytes(p);
        var workspace = matrices * NaiveBlockSparseLauncher.WorkspaceBytes(p, budget / matrices);
        if (perBatch > budget || tensors + workspace > device.Accelerator.MemorySize)
        {
            reason = $"its dense {(backward ? "P and dS workspaces need" : "score workspace needs")} {perBatch / 1e9:0.###} GB per batch entry "
                + $"({matrices}·H·Nq·Nk floats; at most {budget / 1e9:0.###} GB) besides {tensors / 1e9:0.###} GB of tensors on {device.Name}";
            return false;
        }

        reason = string.Empty;
        return true;
    }

    public override void Forward<TD>(ComputeDevice device, AcceleratorStream stream, BlockSparseProblem problem, in DeviceForward<TD> views)
    {
        var mask = problem.Mask.OnDevice(device);
        var bias = problem.Bias?.OnDevice(device) ?? BlockSparseDispatch.NoBias;
        var p = problem.ToParams();
        var budget = NaiveBlockSparseLauncher.Budget(device.Accelerator.MemorySize, workspaceCap);
        IBlockSparsePass pass = views switch
        {
            DeviceForward<float> v => new NaiveBlockSparseForwardPass<float, Float32Storage>(
                device, stream, p, budget, mask.Forward, v.Query, v.Key, v.Value, v.Output, v.LogSumExp),
            DeviceForward<ILGPU.Half> v => new NaiveBlockSparseForwardPass<ILGPU.Half, Float16Storage>(
                device, stream, p, budget, mask.Forward, v.Query, v.Key, v.Value, v.Output, v.LogSumExp),
            DeviceForward<ushort> v => new NaiveBlockSparseForwardPass<ushort, BFloat16Storage>(
                device, stream, p, budget, mask.Forward, v.Query, v.Key, v.Value, v.Output, v.LogSumExp),
            _ => throw new NotSupportedException($"Element type {typeof(TD).Name} is not supported."),
        };
        BlockSparseDispatch.Run(mask.ElementMask, bias, pass);
    }

    public override void Backward<TD>(ComputeDevice device, AcceleratorStream stream, BlockSparseProblem problem, in DeviceBackward<TD> views, ILGPU.ArrayView<float> biasGradient)
    {
        var mask = problem.Mask.OnDevice(device);
        var bias = problem.Bias?.OnDevice(device) ?? BlockSparseDispatch.NoBias;
        var p = problem.ToParams();
        var budget = NaiveBlockSparseLauncher.Budget(device.Accelerator.MemorySize, workspaceCap);
        var target = BiasTarget(problem, biasGradient);
        IBlockSparsePass pass = views switch
        {
            DeviceBackward<float> v => new NaiveBlockSparseBackwardPass<float, Float32Storage>(
                device, stream, p, budget, mask.Forward, v.Query, v.Key, v.Value, v.Output, v.LogSumExp, v.OutputGrad, v.QueryGrad, v.KeyGrad, v.ValueGrad, target),
            DeviceBackward<ILGPU.Half> v => new NaiveBlockSparseBackwardPass<ILGPU.Half, Float16Storage>(
                device, stream, p, budget, mask.Forward, v.Query, v.Key, v.Value, v.Output, v.LogSumExp, v.OutputGrad, v.QueryGrad, v.KeyGrad, v.ValueGrad, target),
            DeviceBackward<ushort> v => new NaiveBlockSparseBackwardPass<ushort, BFloat16Storage>(
                device, stream, p, budget, mask.Forward, v.Query, v.Key, v.Value, v.Output, v.LogSumExp, v.OutputGrad, v.QueryGrad, v.KeyGrad, v.ValueGrad, target),
            _ => throw new NotSupportedException($"Element type {typeof(TD).Name} is not supported."),
        };
        BlockSparseDispatch.Run(mask.ElementMask, bias, pass);
    }
}
