using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Common;
using Natten.Kernels.Runtime;

namespace Natten.Kernels.Naive;

/// <summary>
/// Launch sequences of the naive path on device memory. The caller has validated the problem and
/// the buffer lengths; these only allocate workspaces and enqueue kernels on <c>stream</c>, then
/// wait for the stream before freeing the workspaces.
/// </summary>
internal static class NaiveAttention
{
    /// <summary>Workspace bytes the forward allocates (the ∏K weights, plus merge buffers with additional tokens).</summary>
    public static long ForwardWorkspaceBytes(ProblemParams p, bool wantsLse)
        => sizeof(float) * ((p.Rows * p.WindowSize) + (wantsLse ? 0 : p.Rows)
            + (p.AdditionalTokens > 0 ? (2 * p.Rows * p.ValueDim) + (2 * p.Rows) : 0));

    /// <summary>Workspace bytes the backward allocates: weights, dS, the row term, and the additional-token [rows, Nadd] buffers.</summary>
    public static long BackwardWorkspaceBytes(ProblemParams p)
        => sizeof(float) * ((2 * p.Rows * p.WindowSize) + p.Rows + (2 * p.Rows * p.AdditionalTokens));

    public static void Forward<T, TS>(
        ComputeDevice device, AcceleratorStream stream, ProblemParams p,
        ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<T> additionalKey, ArrayView<T> additionalValue,
        ArrayView<T> output, ArrayView<float> lse)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        var kernels = device.Kernels(a => new NaiveKernelSet<T, TS>(a));
        var accelerator = device.Accelerator;
        using var weights = accelerator.Allocate1D<float>(p.Rows * p.WindowSize);
        using var lseWorkspace = lse.Length == 0 ? accelerator.Allocate1D<float>(p.Rows) : null;
        var naLse = p.AdditionalTokens > 0 || lseWorkspace is not null ? null : (ArrayView<float>?)lse;

        Launch(device, stream, kernels.Scores, p, p.Rows * p.WindowSize, query, key, weights.View);
        if (p.AdditionalTokens == 0)
        {
            Launch(device, stream, kernels.Softmax, p, p.Rows, weights.View, naLse ?? lseWorkspace!.View);
            Launch(device, stream, kernels.WeightedValues, p, p.Rows * p.ValueDim, weights.View, value, output);
            stream.Synchronize();
            return;
        }

        // Additional tokens through the merge path: NA and dense-over-extras, each with its LSE, then merged.
        using var naOutput = accelerator.Allocate1D<float>(p.Rows * p.ValueDim);
        using var naLseBuffer = accelerator.Allocate1D<float>(p.Rows);
        using var extraOutput = accelerator.Allocate1D<float>(p.Rows * p.ValueDim);
        using var extraLse = accelerator.Allocate1D<float>(p.Rows);
        Launch(device, stream, kernels.Softmax, p, p.Rows, weights.View, naLseBuffer.View);
        Launch(device, stream, kernels.WeightedValuesFloat, p, p.Rows * p.ValueDim, weights.View, value, naOutput.View);
        Launch(device, stream, kernels.AdditionalAttention, p, p.Rows * p.ValueDim, query, additionalKey, additionalValue, extraOutput.View, extraLse.View);
        Launch(
            device, stream, kernels.Merge, p, p.Rows * p.ValueDim,
            naOutput.View, naLseBuffer.View, extraOutput.View, extraLse.View, output, lseWorkspace?.View ?? lse);
        stream.Synchronize();
    }

    public static void Backward<T, TS>(
        ComputeDevice device, AcceleratorStream stream, ProblemParams p,
        ArrayView<T> query, ArrayView<T> key, ArrayView<T> value, ArrayView<T> additionalKey, ArrayView<T> additionalValue,
        ArrayView<T> output, ArrayView<float> lse, ArrayView<T> outputGrad,
        ArrayView<T> queryGrad, ArrayView<T> keyGrad, ArrayView<T> valueGrad, ArrayView<T> additionalKeyGrad, ArrayView<T> additionalValueGrad)
        where T : unmanaged
        where TS : struct, IElementStorage<T>
    {
        var kernels = device.Kernels(a => new NaiveKernelSet<T, TS>(a));
        var accelerator = device.Accelerator;
        using var weights = accelerator.Allocate1D<float>(p.Rows * p.WindowSize);
        using var scoreGrad = accelerator.Allocate1D<float>(p.Rows * p.WindowSize);
        using var rowTerm = accelerator.Allocate1D<float>(p.Rows);
        using var extraProbs = accelerator.Allocate1D<float>(Math.Max(1, p.Rows * p.AdditionalTokens));
        using var extraScoreGrad = accelerator.Allocate1D<float>(Math.Max(1, p.Rows * p.AdditionalTokens));
        var channels = Math.Max(p.HeadDim, p.ValueDim);

        Launch(device, stream, kernels.RowTerm, p, p.Rows, output, outputGrad, rowTerm.View);
        Launch(device, stream, kernels.Scores, p, p.Rows * p.WindowSize, query, key, weights.View);
        Launch(device, stream, kernels.ScoreGradients, p, p.Rows * p.WindowSize, weights.View, lse, rowTerm.View, value, outputGrad, scoreGrad.View);
        if (p.AdditionalTokens > 0)
        {
            Launch(
                device, stream, kernels.AdditionalScoreGradients, p, p.Rows * p.AdditionalTokens,
                query, additionalKey, additionalValue, lse, rowTerm.View, outputGrad, extraProbs.View, extraScoreGrad.View);
        }

        Launch(device, stream, kernels.QueryGrad, p, p.Rows * p.HeadDim, scoreGrad.View, key, extraScoreGrad.View, additionalKey, queryGrad);
        Launch(
            device, stream, kernels.KeyValueGrad, p, p.Batch * p.Tokens * p.KvHeads * channels,
            query, outputGrad, weights.View, scoreGrad.View, keyGrad, valueGrad);
        if (p.AdditionalTokens > 0)
        {
            Launch(
                device, stream, kernels.AdditionalKeyValueGrad, p, (long)p.Batch * p.AdditionalTokens * p.KvHeads * channels,
                query, outputGrad, extraProbs.View, extraScoreGrad.View, additionalKeyGrad, additionalValueGrad);
        }

        stream.Synchronize();
    }

    private static void Launch<T1, T2>(
        ComputeDevice device, AcceleratorStream stream, Action<AcceleratorStream, Index1D, ProblemParams, long, int, T1, T2> kernel,
        ProblemParams p, long count, T1 a1, T2 a2)
        where T1 : struct
        where T2 : struct
    {
        var extent = device.LaunchExtent(count);
        kernel(stream, extent, p, count, extent, a1, a2);
    }

    private static void Launch<T1, T2, T3>(
        ComputeDevice device, AcceleratorStream stream, Action<AcceleratorStream, Index1D, ProblemParams, long, int, T1, T2, T3> kernel,
        ProblemParams p, long count, T1 a1, T2 a2, T3 a3)
        where T1 : struct
        where T2 : struct
        where T3 : struct
    {
        var extent = device.LaunchExtent(count);
        kernel(stream, extent, p, count, extent, a1, a2, a3);
    }

    private static void Launch<T1, T2, T3, T4, T5>(
        ComputeDevice device, AcceleratorStream stream, Action<AcceleratorStream, Index1D, ProblemParams, long, int, T1, T2, T3, T4, T5> kernel,
        ProblemParams p, long count, T1 a1, T2 a2, T3 a3, T4 a4, T5 a5)
        where T1 : struct
        where T2 : struct
        where T3 : struct
        where T4 : struct
        where T5 : struct
    {
        var extent = device.LaunchExtent(count);
        kernel(stream, extent, p, count, extent, a1, a2, a3, a4, a5);
    }

    private static void Launch<T1, T2, T3, T4, T5, T6>(
        ComputeDevice device, AcceleratorStream stream, Action<AcceleratorStream, Index1D, ProblemParams, long, int, T1, T2, T3, T4, T5, T6> kernel,
        ProblemParams p, long count, T1 a1, T2 a2, T3 a3, T4 a4, T5 a5, T6 a6)
        where T1 : struct
        where T2 : struct
        where T3 : struct
        where T4 : struct
        where T5 : struct
        where T6 : struct
    {
        var extent = device.LaunchExtent(count);
        kernel(stream, extent, p, count, extent, a1, a2, a3, a4, a5, a6);
    }

    private static void Launch<T1, T2, T3, T4, T5, T6, T7, T8>(
        ComputeDevice device, AcceleratorStream stream, Action<AcceleratorStream, Index1D, ProblemParams, long, int, T1, T2, T3, T4, T5, T6, T7, T8> kernel,
        ProblemParams p, long count, T1 a1, T2 a2, T3 a3, T4 a4, T5 a5, T6 a6, T7 a7, T8 a8)
        where T1 : struct
        where T2 : struct
        where T3 : struct
        where T4 : struct
        where T5 : struct
        where T6 : struct
        where T7 : struct
        where T8 : struct
    {
        var extent = device.LaunchExtent(count);
        kernel(stream, extent, p, count, extent, a1, a2, a3, a4, a5, a6, a7, a8);
    }
}
