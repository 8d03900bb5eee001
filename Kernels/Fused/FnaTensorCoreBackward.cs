using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Common;
using Natten.Kernels.Cuda;
using Natten.Kernels.Fused.Generated;
using Natten.Kernels.Runtime;

namespace Natten.Kernels.Fused;

/// <summary>The tensor-core backward kernels for one 16-bit format (plus the float32 kernels it shares), compiled once per accelerator.</summary>
internal sealed class FnaTensorCoreBackwardKernelSet<TFormat, TStorage>
    where TFormat : struct, IHalfFormat
    where TStorage : struct, IElementStorage<ushort>
{
    private readonly Accelerator _accelerator;
    private readonly ConcurrentDictionary<(int HeadDim, FragmentLoadKind Loads, KvStagingKind Staging), Lazy<QueryGradLauncher>> _registerQueryGrad = new();
    private readonly ConcurrentDictionary<(int HeadDim, FragmentLoadKind Loads, KvStagingKind Staging), Lazy<KeyValueGradLauncher>> _registerKeyValueGrad = new();

    public FnaTensorCoreBackwardKernelSet(Accelerator accelerator)
    {
        _accelerator = accelerator;
        RowTerm = accelerator.LoadAutoGroupedKernel<Index1D, ProblemParams, long, int, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>>(
            FnaBackwardKernels.RowTerm<ushort, TStorage>);
        QueryGrad = LoadQueryGrad(accelerator, FnaTensorCoreBackwardKernels.QueryGrad<TFormat>);
        KeyValueGrad = LoadKeyValueGrad(accelerator, FnaTensorCoreBackwardKernels.KeyValueGrad<TFormat>);
        AdditionalKeyValueGrad = accelerator.LoadKernel<ProblemParams, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>>(
            FnaBackwardKernels.AdditionalKeyValueGrad<ushort, TStorage>);
    }

    public Action<AcceleratorStream, Index1D, ProblemParams, long, int, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>> RowTerm { get; }

    /// <summary>The version-1 dQ kernel (any supported D, Dv).</summary>
    public Action<AcceleratorStream, KernelConfig, ProblemParams, FnaTileShape, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>> QueryGrad { get; }

    /// <summary>
    /// The generated register-resident dQ kernel for D = Dv = <paramref name="headDim"/> with <paramref name="loads"/> and the KV
    /// <paramref name="staging"/>, compiled on first use.
    /// </summary>
    public Action<AcceleratorStream, KernelConfig, ProblemParams, FnaTileShape, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>> RegisterQueryGrad(
        int headDim, FragmentLoadKind loads, KvStagingKind staging)
        => _registerQueryGrad.GetOrAdd(
            (headDim, loads, staging),
            key => new Lazy<QueryGradLauncher>(() => new(LoadQueryGrad(
                _accelerator,
                (key.Loads, key.Staging) switch
                {
                    (FragmentLoadKind.Matrix, KvStagingKind.Async) => FnaRegisterKernels.QueryGrad<TFormat, MatrixLoads, AsyncStaging>(key.HeadDim),
                    (FragmentLoadKind.Matrix, _) => FnaRegisterKernels.QueryGrad<TFormat, MatrixLoads, ElementStaging>(key.HeadDim),
                    (_, KvStagingKind.Async) => FnaRegisterKernels.QueryGrad<TFormat, ElementLoads, AsyncStaging>(key.HeadDim),
                    _ => FnaRegisterKernels.QueryGrad<TFormat, ElementLoads, ElementStaging>(key.HeadDim),
                })))).Value.Launch;

    /// <summary>The version-1 dK/dV kernel (any supported D, Dv).</summary>
    public Action<AcceleratorStream, KernelConfig, ProblemParams, FnaTileShape, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>> KeyValueGrad { get; }

    /// <summary>
    /// The generated register-resident dK/dV kernel for D = Dv = <paramref name="headDim"/> with <paramref name="loads"/> and the
    /// Q/dO <paramref name="staging"/>, compiled on first use.
    /// </summary>
    public Action<AcceleratorStream, KernelConfig, ProblemParams, FnaTileShape, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>> RegisterKeyValueGrad(
        int headDim, FragmentLoadKind loads, KvStagingKind staging)
        => _registerKeyValueGrad.GetOrAdd(
            (headDim, loads, staging),
            key => new Lazy<KeyValueGradLauncher>(() => new(LoadKeyValueGrad(
                _accelerator,
                (key.Loads, key.Staging) switch
                {
                    (FragmentLoadKind.Matrix, KvStagingKind.Async) => FnaRegisterKernels.KeyValueGrad<TFormat, MatrixLoads, AsyncStaging>(key.HeadDim),
                    (FragmentLoadKind.Matrix, _) => FnaRegisterKernels.KeyValueGrad<TFormat, MatrixLoads, ElementStaging>(key.HeadDim),
                    (_, KvStagingKind.Async) => FnaRegisterKernels.KeyValueGrad<TFormat, ElementLoads, AsyncStaging>(key.HeadDim),
                    _ => FnaRegisterKernels.KeyValueGrad<TFormat, ElementLoads, ElementStaging>(key.HeadDim),
                })))).Value.Launch;

    public Action<AcceleratorStream, KernelConfig, ProblemParams, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>> AdditionalKeyValueGrad { get; }

    private static Action<AcceleratorStream, KernelConfig, ProblemParams, FnaTileShape, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>> LoadQueryGrad(
        Accelerator accelerator, Action<ProblemParams, FnaTileShape, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>> kernel)
        => accelerator.LoadKernel(kernel);

    private static Action<AcceleratorStream, KernelConfig, ProblemParams, FnaTileShape, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>> LoadKeyValueGrad(
        Accelerator accelerator, Action<ProblemParams, FnaTileShape, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>> kernel)
        => accelerator.LoadKernel(kernel);
}

/// <summary>A loaded dQ kernel (the version-1 and generated ones share one signature).</summary>
internal sealed record QueryGradLauncher(
    Action<AcceleratorStream, KernelConfig, ProblemParams, FnaTileShape, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>> Launch);

/// <summary>A loaded dK/dV kernel (the version-1 and generated ones share one signature).</summary>
internal sealed record KeyValueGradLauncher(
    Action<AcceleratorStream, KernelConfig, ProblemParams, FnaTileShape, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>> Launch);

/// <summary>
/// Host side of the tensor-core backward: limits, which kernels run, and the launch sequence (workspace: the row term D
/// only). When D = Dv has generated kernels (<see cref="FnaRegisterKernels"/>: 32, 64, 128) dQ and dK/dV run on the
/// register-resident ones (their streamed sub-tiles staged like the forward's KV: 16-byte <c>cp.async</c>, double-buffered,
/// where the views are aligned and two buffers fit, else element by element), otherwise on the
/// version-1 <see cref="FnaTensorCoreBackwardKernels"/>. The additional tokens' dK/dV always come from
/// <see cref="FnaBackwardKernels.AdditionalKeyValueGrad{T, TStorage}"/>.
/// </summary>
internal static class FnaTensorCoreBackward
{
    /// <summary>Static shared memory of the generated kernels in bytes: the emulation scratch, and the dK/dV kernel's per-query LSE and D.</summary>
    public const int RegisterStaticSharedBytes =
        (TensorCore.ScratchWordsPerWarp * FnaTensorCoreKernel.MaxWarps * sizeof(uint)) + (2 * FnaTensorCoreBackwardKernels.MaxScores / 16 * sizeof(float));

    /// <summary>Whether dQ, dK and dV run on the generated register-resident kernels (D = Dv with a generated variant).</summary>
    public static bool UsesRegisterKernels(ProblemParams p) => FnaTensorCore.UsesRegisterKernel(p);

    /// <summary>
    /// Dynamic shared memory of either generated kernel in 16-bit words with <paramref name="staging"/>, in padded rows: per
    /// buffer a sub-tile pair of KV sub-tile rows each (dQ: K, V; dK/dV: Q, dO), and the group's own pair of query-tile rows
    /// each (dQ: Q, dO; dK/dV: K, V), read once into registers, which the buffers past the first Lookahead overlap. One buffer
    /// (<see cref="KvStagingKind.Elements"/>): 2 · max(query tile, KV sub-tile) rows; two (<see cref="KvStagingKind.Async"/>):
    /// 2 · KV sub-tile + 2 · max(query tile, KV sub-tile) rows.
    /// </summary>
    public static int RegisterWords(ProblemParams p, FnaTileShape tile, KvStagingKind staging)
    {
        var buffers = KvStaging.Buffers(staging);
        var lookahead = buffers - 1;
        var pair = 2 * tile.KeyTile;
        return ((lookahead * pair) + Math.Max(2 * tile.QueryTile, (buffers - lookahead) * pair)) * FnaRegisterKernels.RowStride(p.HeadDim);
    }

    /// <summary>
    /// The staging a generated backward kernel of this problem and tile uses on <paramref name="device"/> for the views it
    /// streams with 16-byte copies (<see cref="KvStaging.Choose"/>, the forward's rule).
    /// </summary>
    public static KvStagingKind Staging(ComputeDevice device, ProblemParams p, FnaTileShape tile, params ReadOnlySpan<ArrayView<ushort>> streamed)
        => KvStaging.Choose(
            device, p.HeadDim, p.ValueDim, kind => (long)RegisterWords(p, tile, kind) * sizeof(ushort), RegisterStaticSharedBytes, streamed);

    /// <summary>The dQ kernel's staging for these K, V (and, when used, additional K, V) views.</summary>
    public static KvStagingKind QueryGradStaging(
        ComputeDevice device, ProblemParams p, FnaTileShape tile, ArrayView<ushort> key, ArrayView<ushort> value,
        ArrayView<ushort> additionalKey, ArrayView<ushort> additionalValue)
        => p.AdditionalTokens == 0 ? Staging(device, p, tile, key, value) : Staging(device, p, tile, key, value, additionalKey, additionalValue);

    /// <summary>The dK/dV kernel's staging for these Q and dO views.</summary>
    public static KvStagingKind KeyValueGradStaging(
        ComputeDevice device, ProblemParams p, FnaTileShape tile, ArrayView<ushort> query, ArrayView<ushort> outputGrad)
        => Staging(device, p, tile, query, outputGrad);

    public const int StaticSharedBytes =
        ((2 * FnaTensorCoreBackwardKernels.MaxScores) + (2 * FnaTensorCoreBackwardKernels.MaxScores / 16)) * sizeof(float)
        + (TensorCore.ScratchWordsPerWarp * FnaTensorCoreKernel.MaxWarps * sizeof(uint));

    public static int QueryGradWords(ProblemParams p, FnaTileShape tile)
        => (tile.QueryTile * (p.HeadDim + p.ValueDim)) + (tile.KeyTile * (p.HeadDim + p.ValueDim)) + (tile.QueryTile * tile.KeyTile);

    public static int KeyValueGradWords(ProblemParams p, FnaTileShape tile)
        => (tile.QueryTile * (p.HeadDim + p.ValueDim)) + (tile.KeyTile * (p.HeadDim + p.ValueDim)) + (2 * tile.QueryTile * tile.KeyTile);

    /// <summary>Why the tensor-core backward cannot run this problem and tile, or null.</summary>
    public static string? Check(ComputeDevice device, ProblemParams p, FnaTileShape tile)
    {
        if (FnaTensorCore.Check(device, p, tile) is { } why)
        {
            return why;
        }

        // dP = dO·Vᵀ contracts over Dv, so the backward needs Dv in whole 16-wide k-steps too.
        if (p.ValueDim % 16 != 0 || p.HeadDim > FnaTensorCoreBackwardKernels.MaxDims || tile.QueryTile * tile.KeyTile > FnaTensorCoreBackwardKernels.MaxScores)
        {
            return $"the tensor-core backward needs Dv % 16 == 0 (Dv={p.ValueDim}), D ≤ {FnaTensorCoreBackwardKernels.MaxDims} "
                 + $"and query tile × KV sub-tile ≤ {FnaTensorCoreBackwardKernels.MaxScores}";
        }

        var registers = UsesRegisterKernels(p);
        // The single-buffer footprint must fit; the launch double-buffers where that fits too (Staging).
        var words = registers ? RegisterWords(p, tile, KvStagingKind.Elements) : Math.Max(QueryGradWords(p, tile), KeyValueGradWords(p, tile));
        return device.CheckSharedMemory(
                $"the tensor-core backward with tile shape {tile}, D={p.HeadDim}, Dv={p.ValueDim}", (long)words * sizeof(ushort),
                registers ? RegisterStaticSharedBytes : StaticSharedBytes)
            ?? FnaBackward.CheckAdditional(device, p);
    }

    public static void Backward<TFormat, TStorage>(
        ComputeDevice device, AcceleratorStream stream, ProblemParams p, FnaTileShape tile,
        ArrayView<ushort> query, ArrayView<ushort> key, ArrayView<ushort> value, ArrayView<ushort> additionalKey, ArrayView<ushort> additionalValue,
        ArrayView<ushort> output, ArrayView<float> lse, ArrayView<ushort> outputGrad,
        ArrayView<ushort> queryGrad, ArrayView<ushort> keyGrad, ArrayView<ushort> valueGrad, ArrayView<ushort> additionalKeyGrad, ArrayView<ushort> additionalValueGrad)
        where TFormat : struct, IHalfFormat
        where TStorage : struct, IElementStorage<ushort>
    {
        var kernels = device.Kernels(a => new FnaTensorCoreBackwardKernelSet<TFormat, TStorage>(a));
        var tiles = p.D0 * FnaForwardKernel.TilesPerGroup(p.N0, p.D0, tile.Q0)
            * p.D1 * FnaForwardKernel.TilesPerGroup(p.N1, p.D1, tile.Q1)
            * p.D2 * FnaForwardKernel.TilesPerGroup(p.N2, p.D2, tile.Q2);
        var group = new Index3D(tile.QueryTile * 2, 1, 1);
        var registers = UsesRegisterKernels(p);
        var queryStaging = registers ? QueryGradStaging(device, p, tile, key, value, additionalKey, additionalValue) : KvStagingKind.Elements;
        var queryGradKernel = registers ? kernels.RegisterQueryGrad(p.HeadDim, FragmentLoading.Current, queryStaging) : kernels.QueryGrad;
        var queryConfig = new KernelConfig(
            new Index3D(tiles, p.Heads, p.Batch), group,
            SharedMemoryConfig.RequestDynamic<ushort>(registers ? RegisterWords(p, tile, queryStaging) : QueryGradWords(p, tile)));
        var keyValueStaging = registers ? KeyValueGradStaging(device, p, tile, query, outputGrad) : KvStagingKind.Elements;
        var keyValueGradKernel = registers ? kernels.RegisterKeyValueGrad(p.HeadDim, FragmentLoading.Current, keyValueStaging) : kernels.KeyValueGrad;
        var keyValueConfig = new KernelConfig(
            new Index3D(tiles, p.KvHeads, p.Batch), group,
            SharedMemoryConfig.RequestDynamic<ushort>(registers ? RegisterWords(p, tile, keyValueStaging) : KeyValueGradWords(p, tile)));
        var additionalConfig = FnaBackward.AdditionalConfig(p);
        device.PrepareSharedMemory(queryGradKernel, queryConfig);
        device.PrepareSharedMemory(keyValueGradKernel, keyValueConfig);
        if (p.AdditionalTokens > 0)
        {
            device.PrepareSharedMemory(kernels.AdditionalKeyValueGrad, additionalConfig);
        }

        using var rowTerm = device.Accelerator.Allocate1D<float>(p.Rows);
        var extent = device.LaunchExtent(p.Rows);
        kernels.RowTerm(stream, extent, p, p.Rows, extent, output, outputGrad, rowTerm.View);
        queryGradKernel(stream, queryConfig, p, tile, query, key, value, additionalKey, additionalValue, lse, rowTerm.View, outputGrad, queryGrad);
        keyValueGradKernel(stream, keyValueConfig, p, tile, query, key, value, lse, rowTerm.View, outputGrad, keyGrad, valueGrad);
        if (p.AdditionalTokens > 0)
        {
            kernels.AdditionalKeyValueGrad(
                stream, additionalConfig, p, query, additionalKey, additionalValue, lse, rowTerm.View, outputGrad, additionalKeyGrad, additionalValueGrad);
        }

        stream.Synchronize();
    }
}
