using System.Reflection;
using Natten.Kernels.BlockSparse;
using Natten.Kernels.BlockSparse.Generated;
using Natten.Kernels.Common;
using Natten.Kernels.Cuda;
using Natten.Kernels.Fused;
using Natten.Kernels.Fused.Generated;
using Natten.Kernels.Naive;

namespace Natten.Kernels.Runtime;

/// <summary>
/// Every kernel entry point the backends load, with representative type arguments (each storage type,
/// each mask and bias struct), so that tools can compile all of them ahead of a launch: the PTX check in
/// the tests and <c>natten ptx</c>. A kernel set that loads a new entry point adds it here.
/// </summary>
internal static class KernelCatalog
{
    /// <summary>One compiled variant of a kernel.</summary>
    /// <param name="Name">Readable name: type.method&lt;type arguments&gt;.</param>
    /// <param name="Method">The closed generic (or plain) kernel method.</param>
    /// <param name="Grouped">Explicitly grouped (<c>LoadKernel</c>) or implicitly grouped (<c>LoadAutoGroupedKernel</c>).</param>
    /// <param name="TensorCore">Uses mma.sync fragments (the PTX must contain mma.sync).</param>
    /// <param name="RegisterResident">
    /// Keeps every fragment in registers by construction (the generated kernels): the PTX must declare no local array.
    /// </param>
    public sealed record Entry(string Name, MethodInfo Method, bool Grouped, bool TensorCore, bool RegisterResident = false)
    {
        public override string ToString() => Name;
    }

    private static readonly (Type Element, Type Storage)[] Storages =
    [
        (typeof(float), typeof(Float32Storage)),
        (typeof(ILGPU.Half), typeof(Float16Storage)),
        (typeof(ushort), typeof(BFloat16Storage)),
    ];

    private static readonly Type[] Formats = [typeof(Fp16Format), typeof(Bf16Format)];

    private static readonly Type[] Masks =
    [
        typeof(AllowAll), typeof(DenseBitMask), typeof(SlidingWindowMask), typeof(SegmentMask),
        typeof(GridWindowMask), typeof(NeighborhoodMask), typeof(AndMask<SegmentMask, SlidingWindowMask>),
    ];

    private static readonly Type[] Biases = [typeof(NoBias), typeof(DenseBias), typeof(RelativePositionBias)];

    /// <summary>All entries, in a fixed order.</summary>
    public static IReadOnlyList<Entry> All { get; } = Build();

    private static List<Entry> Build()
    {
        var entries = new List<Entry>();
        void Add(Type owner, string method, bool grouped, bool tensorCore, params Type[] args)
            => AddEntry(owner, method, grouped, tensorCore, false, args);

        void AddEntry(Type owner, string method, bool grouped, bool tensorCore, bool registerResident, params Type[] args)
        {
            var open = owner.GetMethod(method, BindingFlags.Public | BindingFlags.Static)
                ?? throw new MissingMethodException(owner.FullName, method);
            var closed = args.Length == 0 ? open : open.MakeGenericMethod(args);
            var name = args.Length == 0 ? $"{owner.Name}.{method}" : $"{owner.Name}.{method}<{string.Join(", ", args.Select(Readable))}>";
            entries.Add(new Entry(name, closed, grouped, tensorCore, registerResident));
        }

        foreach (var (t, s) in Storages)
        {
            Add(typeof(NaiveKernels), nameof(NaiveKernels.Scores), false, false, t, s);
            Add(typeof(NaiveKernels), nameof(NaiveKernels.WeightedValues), false, false, t, s, t, s);
            Add(typeof(NaiveKernels), nameof(NaiveKernels.WeightedValues), false, false, t, s, typeof(float), typeof(Float32Storage));
            Add(typeof(NaiveKernels), nameof(NaiveKernels.AdditionalAttention), false, false, t, s);
            Add(typeof(NaiveKernels), nameof(NaiveKernels.Merge), false, false, t, s);
            Add(typeof(NaiveKernels), nameof(NaiveKernels.RowTerm), false, false, t, s);
            Add(typeof(NaiveKernels), nameof(NaiveKernels.ScoreGradients), false, false, t, s);
            Add(typeof(NaiveKernels), nameof(NaiveKernels.AdditionalScoreGradients), false, false, t, s);
            Add(typeof(NaiveKernels), nameof(NaiveKernels.QueryGrad), false, false, t, s);
            Add(typeof(NaiveKernels), nameof(NaiveKernels.KeyValueGrad), false, false, t, s);
            Add(typeof(NaiveKernels), nameof(NaiveKernels.AdditionalKeyValueGrad), false, false, t, s);
            Add(typeof(FnaForwardKernel), nameof(FnaForwardKernel.Forward), true, false, t, s);
            Add(typeof(FnaBackwardKernels), nameof(FnaBackwardKernels.RowTerm), false, false, t, s);
            Add(typeof(FnaBackwardKernels), nameof(FnaBackwardKernels.QueryGrad), true, false, t, s);
            Add(typeof(FnaBackwardKernels), nameof(FnaBackwardKernels.KeyValueGrad), true, false, t, s);
            Add(typeof(FnaBackwardKernels), nameof(FnaBackwardKernels.AdditionalKeyValueGrad), true, false, t, s);
            Add(typeof(BlockSparseBackwardKernels), nameof(BlockSparseBackwardKernels.RowTerm), false, false, t, s);
        }

        Add(typeof(NaiveKernels), nameof(NaiveKernels.Softmax), false, false);

        foreach (var format in Formats)
        {
            Add(typeof(FnaTensorCoreKernel), nameof(FnaTensorCoreKernel.Forward), true, true, format);
            Add(typeof(FnaTensorCoreBackwardKernels), nameof(FnaTensorCoreBackwardKernels.QueryGrad), true, true, format);
            Add(typeof(FnaTensorCoreBackwardKernels), nameof(FnaTensorCoreBackwardKernels.KeyValueGrad), true, true, format);

            // The generated kernels with ldmatrix (the default) for both formats; element loads once (fp16). Each also takes the
            // staging of its streamed sub-tiles (forward and dQ: K, V; dK/dV: Q, dO): cp.async double buffering (the default) in
            // each of those, the synchronous element staging once (fp16).
            foreach (var (kernel, method) in FnaRegisterKernels.EntryPoints)
            {
                var staged = kernel.GetMethod(method, BindingFlags.Public | BindingFlags.Static)!.GetGenericArguments().Length == 3;
                Type[] Args(Type loads, Type staging) => staged ? [format, loads, staging] : [format, loads];
                AddEntry(kernel, method, true, true, true, Args(typeof(MatrixLoads), typeof(AsyncStaging)));
                if (format == typeof(Fp16Format))
                {
                    AddEntry(kernel, method, true, true, true, Args(typeof(ElementLoads), typeof(AsyncStaging)));
                    if (staged)
                    {
                        AddEntry(kernel, method, true, true, true, format, typeof(MatrixLoads), typeof(ElementStaging));
                    }
                }
            }
        }

        Add(typeof(FnaTf32Kernel), nameof(FnaTf32Kernel.Forward), true, true);

        var (ft, fs) = Storages[0];
        var (ht, hs) = Storages[1];
        foreach (var mask in Masks)
        {
            Add(typeof(BlockSparseForwardKernel), nameof(BlockSparseForwardKernel.Forward), true, false, ft, fs, mask, typeof(NoBias));
        }

        foreach (var bias in Biases)
        {
            Add(typeof(BlockSparseForwardKernel), nameof(BlockSparseForwardKernel.Forward), true, false, ht, hs, typeof(AllowAll), bias);
            Add(typeof(BlockSparseBackwardKernels), nameof(BlockSparseBackwardKernels.QueryGrad), true, false, ft, fs, typeof(SlidingWindowMask), bias, typeof(NoBiasGradient));
            Add(typeof(BlockSparseBackwardKernels), nameof(BlockSparseBackwardKernels.KeyValueGrad), true, false, ft, fs, typeof(SlidingWindowMask), bias);
        }

        // The tensor-core block-sparse forward: each format with every mask (no bias) and every bias (full blocks only).
        foreach (var format in Formats)
        {
            foreach (var mask in Masks)
            {
                Add(typeof(BlockSparseTensorCoreKernel), nameof(BlockSparseTensorCoreKernel.Forward), true, true, format, mask, typeof(NoBias));
            }

            foreach (var bias in Biases.Skip(1))
            {
                Add(typeof(BlockSparseTensorCoreKernel), nameof(BlockSparseTensorCoreKernel.Forward), true, true, format, typeof(AllowAll), bias);
            }
        }

        // The generated register-resident block-sparse forwards (ldmatrix, cp.async double-buffered KV staging: the defaults): per
        // head dim each format with full blocks and no bias, one partial-block mask, each bias with one format; at D = 64 element
        // loads once and the synchronous element staging once (the fallback for unaligned views or a double buffer that does not
        // fit; fp16). Each instance also compiles the full-block (AllowAll) path next to its mask's.
        foreach (var (kernel, method) in BlockSparseRegisterKernels.EntryPoints)
        {
            var (matrix, staging) = (typeof(MatrixLoads), typeof(AsyncStaging));
            AddEntry(kernel, method, true, true, true, typeof(Fp16Format), matrix, staging, typeof(AllowAll), typeof(NoBias));
            AddEntry(kernel, method, true, true, true, typeof(Bf16Format), matrix, staging, typeof(AllowAll), typeof(NoBias));
            AddEntry(kernel, method, true, true, true, typeof(Fp16Format), matrix, staging, typeof(SlidingWindowMask), typeof(NoBias));
            AddEntry(kernel, method, true, true, true, typeof(Fp16Format), matrix, staging, typeof(AllowAll), typeof(DenseBias));
            AddEntry(kernel, method, true, true, true, typeof(Bf16Format), matrix, staging, typeof(AllowAll), typeof(RelativePositionBias));
            if (kernel == typeof(BlockSparseTensorCoreKernelD64))
            {
                AddEntry(kernel, method, true, true, true, typeof(Fp16Format), typeof(ElementLoads), staging, typeof(AllowAll), typeof(NoBias));
                AddEntry(kernel, method, true, true, true, typeof(Fp16Format), matrix, typeof(ElementStaging), typeof(SlidingWindowMask), typeof(NoBias));
            }
        }

        // The score-bias gradient: the dQ kernel with each gradient sink, and the fixed-order reductions.
        Add(typeof(BlockSparseBackwardKernels), nameof(BlockSparseBackwardKernels.QueryGrad), true, false, ft, fs, typeof(AllowAll), typeof(DenseBias), typeof(DirectBiasGradient));
        Add(typeof(BlockSparseBackwardKernels), nameof(BlockSparseBackwardKernels.QueryGrad), true, false, ht, hs, typeof(AllowAll), typeof(DenseBias), typeof(PairBiasGradient));
        Add(typeof(BlockSparseBackwardKernels), nameof(BlockSparseBackwardKernels.QueryGrad), true, false, ft, fs, typeof(NeighborhoodMask), typeof(RelativePositionBias), typeof(RowTableBiasGradient));
        Add(typeof(BiasGradientKernels), nameof(BiasGradientKernels.ReduceDense), false, false);
        Add(typeof(BiasGradientKernels), nameof(BiasGradientKernels.ReduceTable), false, false);

        // The unfused block-sparse baseline.
        foreach (var (t, st) in Storages)
        {
            Add(typeof(NaiveBlockSparseKernels), nameof(NaiveBlockSparseKernels.Scores), false, false, t, st, typeof(SlidingWindowMask), typeof(DenseBias));
            Add(typeof(NaiveBlockSparseKernels), nameof(NaiveBlockSparseKernels.WeightedValues), false, false, t, st);
            Add(typeof(NaiveBlockSparseKernels), nameof(NaiveBlockSparseKernels.RowTerm), false, false, t, st);
            Add(typeof(NaiveBlockSparseKernels), nameof(NaiveBlockSparseKernels.ProbabilitiesAndScoreGrads), false, false, t, st, typeof(SegmentMask), typeof(RelativePositionBias));
            Add(typeof(NaiveBlockSparseKernels), nameof(NaiveBlockSparseKernels.QueryGrad), false, false, t, st);
            Add(typeof(NaiveBlockSparseKernels), nameof(NaiveBlockSparseKernels.KeyValueGrad), false, false, t, st);
        }

        Add(typeof(NaiveBlockSparseKernels), nameof(NaiveBlockSparseKernels.Softmax), false, false);
        Add(typeof(NaiveBlockSparseKernels), nameof(NaiveBlockSparseKernels.ScatterBiasGradient), false, false, typeof(DenseBias), typeof(PairBiasGradient));
        Add(typeof(NaiveBlockSparseKernels), nameof(NaiveBlockSparseKernels.ScatterBiasGradient), false, false, typeof(RelativePositionBias), typeof(RowTableBiasGradient));

        // The device self-check of the tensor-core fragment loads (ldmatrix on CUDA).
        Add(typeof(FragmentLoadProbe), nameof(FragmentLoadProbe.Probe), true, false, typeof(MatrixLoads));
        Add(typeof(FragmentLoadProbe), nameof(FragmentLoadProbe.Probe), true, false, typeof(ElementLoads));
        Add(typeof(AddressSpaceProbe), nameof(AddressSpaceProbe.Probe), true, false);

        // Building block masks on the device.
        foreach (var mask in Masks)
        {
            Add(typeof(BlockMaskBuildKernels), nameof(BlockMaskBuildKernels.Classify), false, false, mask);
        }

        Add(typeof(BlockMaskBuildKernels), nameof(BlockMaskBuildKernels.Count), false, false);
        Add(typeof(BlockMaskBuildKernels), nameof(BlockMaskBuildKernels.Fill), false, false);

        return entries;
    }

    private static string Readable(Type type) => type == typeof(ILGPU.Half) ? "Half" : type.IsGenericType
        ? $"{type.Name[..type.Name.IndexOf('`', StringComparison.Ordinal)]}<{string.Join(", ", type.GetGenericArguments().Select(Readable))}>"
        : type.Name;
}
