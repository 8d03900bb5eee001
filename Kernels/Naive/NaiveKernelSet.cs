using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Common;

namespace Natten.Kernels.Naive;

/// <summary>The naive kernels for one storage type, compiled once per accelerator (see <see cref="Runtime.ComputeDevice.Kernels{TSet}"/>).</summary>
internal sealed class NaiveKernelSet<T, TS>
    where T : unmanaged
    where TS : struct, IElementStorage<T>
{
    public NaiveKernelSet(Accelerator accelerator)
    {
        Scores = accelerator.LoadAutoGroupedKernel<Index1D, ProblemParams, long, int, ArrayView<T>, ArrayView<T>, ArrayView<float>>(
            NaiveKernels.Scores<T, TS>);
        Softmax = accelerator.LoadAutoGroupedKernel<Index1D, ProblemParams, long, int, ArrayView<float>, ArrayView<float>>(
            NaiveKernels.Softmax);
        WeightedValues = accelerator.LoadAutoGroupedKernel<Index1D, ProblemParams, long, int, ArrayView<float>, ArrayView<T>, ArrayView<T>>(
            NaiveKernels.WeightedValues<T, TS, T, TS>);
        WeightedValuesFloat = accelerator.LoadAutoGroupedKernel<Index1D, ProblemParams, long, int, ArrayView<float>, ArrayView<T>, ArrayView<float>>(
            NaiveKernels.WeightedValues<T, TS, float, Float32Storage>);
        AdditionalAttention = accelerator.LoadAutoGroupedKernel<Index1D, ProblemParams, long, int, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>>(
            NaiveKernels.AdditionalAttention<T, TS>);
        Merge = accelerator.LoadAutoGroupedKernel<Index1D, ProblemParams, long, int, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<float>>(
            NaiveKernels.Merge<T, TS>);
        RowTerm = accelerator.LoadAutoGroupedKernel<Index1D, ProblemParams, long, int, ArrayView<T>, ArrayView<T>, ArrayView<float>>(
            NaiveKernels.RowTerm<T, TS>);
        ScoreGradients = accelerator.LoadAutoGroupedKernel<Index1D, ProblemParams, long, int, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>, ArrayView<float>>(
            NaiveKernels.ScoreGradients<T, TS>);
        AdditionalScoreGradients = accelerator.LoadAutoGroupedKernel<Index1D, ProblemParams, long, int, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<float>, ArrayView<float>>(
            NaiveKernels.AdditionalScoreGradients<T, TS>);
        QueryGrad = accelerator.LoadAutoGroupedKernel<Index1D, ProblemParams, long, int, ArrayView<float>, ArrayView<T>, ArrayView<float>, ArrayView<T>, ArrayView<T>>(
            NaiveKernels.QueryGrad<T, TS>);
        KeyValueGrad = accelerator.LoadAutoGroupedKernel<Index1D, ProblemParams, long, int, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>>(
            NaiveKernels.KeyValueGrad<T, TS>);
        AdditionalKeyValueGrad = accelerator.LoadAutoGroupedKernel<Index1D, ProblemParams, long, int, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>>(
            NaiveKernels.AdditionalKeyValueGrad<T, TS>);
    }

    public Action<AcceleratorStream, Index1D, ProblemParams, long, int, ArrayView<T>, ArrayView<T>, ArrayView<float>> Scores { get; }

    public Action<AcceleratorStream, Index1D, ProblemParams, long, int, ArrayView<float>, ArrayView<float>> Softmax { get; }

    public Action<AcceleratorStream, Index1D, ProblemParams, long, int, ArrayView<float>, ArrayView<T>, ArrayView<T>> WeightedValues { get; }

    public Action<AcceleratorStream, Index1D, ProblemParams, long, int, ArrayView<float>, ArrayView<T>, ArrayView<float>> WeightedValuesFloat { get; }

    public Action<AcceleratorStream, Index1D, ProblemParams, long, int, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>> AdditionalAttention { get; }

    public Action<AcceleratorStream, Index1D, ProblemParams, long, int, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<float>> Merge { get; }

    public Action<AcceleratorStream, Index1D, ProblemParams, long, int, ArrayView<T>, ArrayView<T>, ArrayView<float>> RowTerm { get; }

    public Action<AcceleratorStream, Index1D, ProblemParams, long, int, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>, ArrayView<float>> ScoreGradients { get; }

    public Action<AcceleratorStream, Index1D, ProblemParams, long, int, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<float>, ArrayView<float>> AdditionalScoreGradients { get; }

    public Action<AcceleratorStream, Index1D, ProblemParams, long, int, ArrayView<float>, ArrayView<T>, ArrayView<float>, ArrayView<T>, ArrayView<T>> QueryGrad { get; }

    public Action<AcceleratorStream, Index1D, ProblemParams, long, int, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>> KeyValueGrad { get; }

    public Action<AcceleratorStream, Index1D, ProblemParams, long, int, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<T>, ArrayView<T>> AdditionalKeyValueGrad { get; }
}
