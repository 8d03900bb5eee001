using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.Common;
using Natten.Kernels.Cuda;
using Natten.Kernels.Fused.Generated;
using Natten.Kernels.Runtime;

namespace Natten.Kernels.Fused;

/// <summary>
/// The tensor-core forward kernels for one 16-bit format, compiled once per accelerator on first use: the
/// general version-1 kernel and the generated register-resident ones (<see cref="FnaRegisterKernels"/>), per head
/// dimension, fragment-load kind and KV staging.
/// </summary>
internal sealed class FnaTensorCoreKernelSet<TFormat>
    where TFormat : struct, IHalfFormat
{
    private readonly Accelerator _accelerator;
    private readonly Lazy<ForwardLauncher> _general;
    private readonly ConcurrentDictionary<(int HeadDim, FragmentLoadKind Loads, KvStagingKind Staging), Lazy<ForwardLauncher>> _registers = new();

    public FnaTensorCoreKernelSet(Accelerator accelerator)
    {
        _accelerator = accelerator;
        _general = new(() => Load(accelerator, FnaTensorCoreKernel.Forward<TFormat>));
    }

    /// <summary>The version-1 kernel (any supported D, Dv).</summary>
    public ForwardLauncher Forward => _general.Value;

    /// <summary>The register-resident kernel for D = Dv = <paramref name="headDim"/> with <paramref name="loads"/> and <paramref name="staging"/>.</summary>
    public ForwardLauncher Registers(int headDim, FragmentLoadKind loads, KvStagingKind staging)
        => _registers.GetOrAdd(
            (headDim, loads, staging),
            key => new Lazy<ForwardLauncher>(() => Load(_accelerator, Kernel(key.HeadDim, key.Loads, key.Staging)))).Value;

    private static Action<ProblemParams, FnaTileShape, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, int> Kernel(
        int headDim, FragmentLoadKind loads, KvStagingKind staging)
        => (loads, staging) switch
        {
            (FragmentLoadKind.Matrix, KvStagingKind.Async) => FnaRegisterKernels.Forward<TFormat, MatrixLoads, AsyncStaging>(headDim),
            (FragmentLoadKind.Matrix, _) => FnaRegisterKernels.Forward<TFormat, MatrixLoads, ElementStaging>(headDim),
            (_, KvStagingKind.Async) => FnaRegisterKernels.Forward<TFormat, ElementLoads, AsyncStaging>(headDim),
            _ => FnaRegisterKernels.Forward<TFormat, ElementLoads, ElementStaging>(headDim),
        };

    private static ForwardLauncher Load(Accelerator accelerator, Action<ProblemParams, FnaTileShape, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, int> kernel)
        => new(accelerator.LoadKernel(kernel));
}

/// <summary>A loaded forward kernel (all tensor-core forwards share one signature).</summary>
internal sealed record ForwardLauncher(
    Action<AcceleratorStream, KernelConfig, ProblemParams, FnaTileShape, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, int> Launch);

/// <summary>
/// Host side of the tensor-core forward: tile choice, limits, which kernel runs, and the launch (no workspace).
/// D = Dv with a generated kernel (<see cref="FnaRegisterKernels"/>: 32, 64, 128) runs the register-resident kernel
/// (Q, S, P and O fragments in registers, fragments gathered per <see cref="FragmentLoading.Current"/>, KV sub-tiles staged per
/// <see cref="Staging(ComputeDevice, ProblemParams, FnaTileShape)"/>); other head dims run the
/// version-1 <see cref="FnaTensorCoreKernel"/> (S and P staged in shared memory, O in a local array).
/// </summary>
internal static class FnaTensorCore
{
    /// <summary>Bytes of static shared memory the version-1 kernel declares (scores, row statistics, emulation scratch).</summary>
    public const int StaticSharedBytes =
        (FnaTensorCoreKernel.MaxScores + (3 * 16 * FnaTensorCoreKernel.MaxWarps)) * sizeof(float)
        + (TensorCore.ScratchWordsPerWarp * FnaTensorCoreKernel.MaxWarps * sizeof(uint));

    /// <summary>Bytes of static shared memory the register-resident kernels declare (the emulation scratch only).</summary>
    public const int RegisterStaticSharedBytes = TensorCore.ScratchWordsPerWarp * FnaTensorCoreKernel.MaxWarps * sizeof(uint);

    /// <summary>Whether the problem runs on a generated register-resident kernel: D = Dv with a generated variant.</summary>
    public static bool UsesRegisterKernel(ProblemParams p) => p.HeadDim == p.ValueDim && FnaRegisterKernels.Supports(p.HeadDim);

    /// <summary>16-bit words per staged row of the register-resident kernel for this problem (D plus padding).</summary>
    private static int RegisterRowStride(ProblemParams p) => FnaRegisterKernels.RowStride(p.HeadDim);

    /// <summary>
    /// Dynamic shared memory in 16-bit words with <paramref name="staging"/>: Q, and per KV buffer (two with
    /// <see cref="KvStagingKind.Async"/>, one with <see cref="KvStagingKind.Elements"/>) K and V (rows padded) for the
    /// register-resident kernel; Q, K, V and P for version 1 (no staging choice).
    /// </summary>
    public static int DynamicSharedWords(ProblemParams p, FnaTileShape tile, KvStagingKind staging)
        => UsesRegisterKernel(p)
            ? (tile.QueryTile + (2 * KvStaging.Buffers(staging) * tile.KeyTile)) * RegisterRowStride(p)
            : (tile.QueryTile * p.HeadDim) + (tile.KeyTile * (p.HeadDim + p.ValueDim)) + (tile.QueryTile * tile.KeyTile);

    /// <summary>Dynamic shared memory in 16-bit words with the preferred staging (<see cref="KvStaging.Current"/>).</summary>
    public static int DynamicSharedWords(ProblemParams p, FnaTileShape tile) => DynamicSharedWords(p, tile, KvStaging.Current);

    /// <summary>Shared memory per group in bytes, static and dynamic, with <paramref name="staging"/>.</summary>
    public static int SharedBytes(ProblemParams p, FnaTileShape tile, KvStagingKind staging)
        => StaticBytes(p) + (DynamicSharedWords(p, tile, staging) * sizeof(ushort));

    /// <summary>Shared memory per group in bytes, static and dynamic, with the preferred staging (<see cref="KvStaging.Current"/>).</summary>
    public static int SharedBytes(ProblemParams p, FnaTileShape tile) => SharedBytes(p, tile, KvStaging.Current);

    /// <summary>
    /// The KV staging a register-resident launch of this problem and tile uses on <paramref name="device"/> for aligned views: the
    /// preferred one (<see cref="KvStaging.Current"/>) when its footprint fits the device's shared memory, else the single-buffer
    /// <see cref="KvStagingKind.Elements"/> (which <see cref="Check"/> requires to fit).
    /// </summary>
    public static KvStagingKind Staging(ComputeDevice device, ProblemParams p, FnaTileShape tile)
        => KvStaging.Choose(device, p.HeadDim, p.ValueDim, kind => (long)DynamicSharedWords(p, tile, kind) * sizeof(ushort), StaticBytes(p));

    /// <summary>
    /// <see cref="Staging(ComputeDevice, ProblemParams, FnaTileShape)"/> for these views: <see cref="KvStagingKind.Elements"/>
    /// where 16-byte copies cannot read them (D not a multiple of 8, or a K or V view — additional ones when used — whose start is
    /// not 16-byte aligned, e.g. a sub-view at an odd element offset).
    /// </summary>
    public static KvStagingKind Staging(
        ComputeDevice device, ProblemParams p, FnaTileShape tile, ArrayView<ushort> key, ArrayView<ushort> value,
        ArrayView<ushort> additionalKey, ArrayView<ushort> additionalValue)
        => p.AdditionalTokens == 0
            ? KvStaging.Choose(device, p.HeadDim, p.ValueDim, kind => (long)DynamicSharedWords(p, tile, kind) * sizeof(ushort), StaticBytes(p), key, value)
            : KvStaging.Choose(
                device, p.HeadDim, p.ValueDim, kind => (long)DynamicSharedWords(p, tile, kind) * sizeof(ushort), StaticBytes(p),
                key, value, additionalKey, additionalValue);

    /// <summary>Static shared memory of the kernel that runs this problem, in bytes.</summary>
    private static int StaticBytes(ProblemParams p) => UsesRegisterKernel(p) ? RegisterStaticSharedBytes : StaticSharedBytes;

    /// <summary>
    /// Defaults: 64 / 8×8 / 4×4×4 queries (4 warps) with KV sub-tiles of 32 / 4×8 / 2×4×4 keys for D ≤ 128;
    /// 32 queries and 16 keys above. Axes shorter than a tile extent keep the extent (the edge tiles are partial).
    /// </summary>
    public static FnaTileShape Default(int rank, int headDim)
    {
        var large = headDim > 128;
        return rank switch
        {
            1 => large ? new FnaTileShape(1, 1, 32, 1, 1, 16) : new FnaTileShape(1, 1, 64, 1, 1, 32),
            2 => large ? new FnaTileShape(1, 4, 8, 1, 4, 4) : new FnaTileShape(1, 8, 8, 1, 4, 8),
            _ => large ? new FnaTileShape(2, 4, 4, 1, 4, 4) : new FnaTileShape(4, 4, 4, 2, 4, 4),
        };
    }

    /// <summary>Why the tensor-core kernel cannot run this problem and tile on the device, or null.</summary>
    public static string? Check(ComputeDevice device, ProblemParams p, FnaTileShape tile)
    {
        if (p.HeadDim % 16 != 0 || p.ValueDim % 8 != 0 || p.ValueDim > FnaTensorCoreKernel.MaxValueDim)
        {
            return $"the tensor-core kernel needs D % 16 == 0 and Dv % 8 == 0 with Dv ≤ {FnaTensorCoreKernel.MaxValueDim} (D={p.HeadDim}, Dv={p.ValueDim})";
        }

        if (tile.QueryTile % 16 != 0 || tile.QueryTile > 16 * FnaTensorCoreKernel.MaxWarps || tile.KeyTile % 16 != 0
            || (!UsesRegisterKernel(p) && tile.QueryTile * tile.KeyTile > FnaTensorCoreKernel.MaxScores))
        {
            return $"tile shape {tile}: the tensor-core kernel needs a query tile of 16, 32, 48 or 64 and a KV sub-tile that is a multiple of 16";
        }

        if (device.Accelerator.WarpSize != 32)
        {
            return $"the tensor-core kernel needs 32-lane warps; {device.Name} has {device.Accelerator.WarpSize}";
        }

        // The single-buffer footprint must fit; the launch double-buffers where that fits too (Staging).
        return device.CheckSharedMemory(
                $"tile shape {tile} with D={p.HeadDim}, Dv={p.ValueDim}", (long)DynamicSharedWords(p, tile, KvStagingKind.Elements) * sizeof(ushort), StaticBytes(p))
            ?? FnaForward.CheckGrid(device, p, tile);
    }

    public static void Forward<TFormat>(
        ComputeDevice device, AcceleratorStream stream, ProblemParams p, FnaTileShape tile,
        ArrayView<ushort> query, ArrayView<ushort> key, ArrayView<ushort> value, ArrayView<ushort> additionalKey, ArrayView<ushort> additionalValue,
        ArrayView<ushort> output, ArrayView<float> lse)
        where TFormat : struct, IHalfFormat
    {
        var kernels = device.Kernels(a => new FnaTensorCoreKernelSet<TFormat>(a));
        var tiles = p.D0 * FnaForwardKernel.TilesPerGroup(p.N0, p.D0, tile.Q0)
            * p.D1 * FnaForwardKernel.TilesPerGroup(p.N1, p.D1, tile.Q1)
            * p.D2 * FnaForwardKernel.TilesPerGroup(p.N2, p.D2, tile.Q2);
        var registers = UsesRegisterKernel(p);
        var staging = registers ? Staging(device, p, tile, key, value, additionalKey, additionalValue) : KvStagingKind.Elements;
        var config = new KernelConfig(
            new Index3D(tiles, p.Heads, p.Batch),
            new Index3D(tile.QueryTile * 2, 1, 1),
            SharedMemoryConfig.RequestDynamic<ushort>(DynamicSharedWords(p, tile, staging)));
        var kernel = registers ? kernels.Registers(p.HeadDim, FragmentLoading.Current, staging) : kernels.Forward;
        device.PrepareSharedMemory(kernel.Launch, config);
        kernel.Launch(stream, config, p, tile, query, key, value, additionalKey, additionalValue, output, lse, lse.Length > 0 ? 1 : 0);
    }
}
