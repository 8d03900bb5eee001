using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;
using Natten.Kernels.BlockSparse.Generated;
using Natten.Kernels.Cuda;
using Natten.Kernels.Fused;
using Natten.Kernels.Runtime;

namespace Natten.Kernels.BlockSparse;

/// <summary>
/// The tensor-core block-sparse forwards for one 16-bit format, mask and bias, compiled once per accelerator on first
/// use: the version-1 kernel and the generated register-resident ones (<see cref="BlockSparseRegisterKernels"/>), per
/// head dimension, fragment-load kind and KV staging.
/// </summary>
internal sealed class BlockSparseTensorCoreKernelSet<TFormat, TMask, TBias>
    where TFormat : struct, IHalfFormat
    where TMask : struct, IElementMask
    where TBias : struct, IScoreBias
{
    private readonly Accelerator _accelerator;
    private readonly Lazy<BlockSparseForwardLauncher<TMask, TBias>> _general;
    private readonly ConcurrentDictionary<(int HeadDim, FragmentLoadKind Loads, KvStagingKind Staging), Lazy<BlockSparseForwardLauncher<TMask, TBias>>> _registers = new();

    public BlockSparseTensorCoreKernelSet(Accelerator accelerator)
    {
        _accelerator = accelerator;
        _general = new(() => Load(accelerator, BlockSparseTensorCoreKernel.Forward<TFormat, TMask, TBias>));
    }

    /// <summary>The version-1 kernel (any supported D, Dv).</summary>
    public BlockSparseForwardLauncher<TMask, TBias> Forward => _general.Value;

    /// <summary>The register-resident kernel for D = Dv = <paramref name="headDim"/> with <paramref name="loads"/> and <paramref name="staging"/>.</summary>
    public BlockSparseForwardLauncher<TMask, TBias> Registers(int headDim, FragmentLoadKind loads, KvStagingKind staging)
        => _registers.GetOrAdd(
            (headDim, loads, staging),
            key => new Lazy<BlockSparseForwardLauncher<TMask, TBias>>(() => Load(_accelerator, Kernel(key.HeadDim, key.Loads, key.Staging)))).Value;

    private static Action<BlockSparseParams, BlockSparseTensorCoreTile, BlockList, TMask, TBias, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, int> Kernel(
        int headDim, FragmentLoadKind loads, KvStagingKind staging)
        => (loads, staging) switch
        {
            (FragmentLoadKind.Matrix, KvStagingKind.Async) => BlockSparseRegisterKernels.Forward<TFormat, MatrixLoads, AsyncStaging, TMask, TBias>(headDim),
            (FragmentLoadKind.Matrix, _) => BlockSparseRegisterKernels.Forward<TFormat, MatrixLoads, ElementStaging, TMask, TBias>(headDim),
            (_, KvStagingKind.Async) => BlockSparseRegisterKernels.Forward<TFormat, ElementLoads, AsyncStaging, TMask, TBias>(headDim),
            _ => BlockSparseRegisterKernels.Forward<TFormat, ElementLoads, ElementStaging, TMask, TBias>(headDim),
        };

    private static BlockSparseForwardLauncher<TMask, TBias> Load(
        Accelerator accelerator,
        Action<BlockSparseParams, BlockSparseTensorCoreTile, BlockList, TMask, TBias, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, int> kernel)
        => new(accelerator.LoadKernel(kernel));
}

/// <summary>A loaded block-sparse tensor-core forward (version 1 and the register-resident kernels share one signature).</summary>
internal sealed record BlockSparseForwardLauncher<TMask, TBias>(
    Action<AcceleratorStream, KernelConfig, BlockSparseParams, BlockSparseTensorCoreTile, BlockList, TMask, TBias, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, int> Launch)
    where TMask : struct, IElementMask
    where TBias : struct, IScoreBias;

/// <summary>
/// Host side of the tensor-core block-sparse forward: tile choice, limits, which kernel runs, and the launch. D = Dv
/// with a generated kernel (<see cref="BlockSparseRegisterKernels"/>: 32, 64, 128) runs the register-resident kernel
/// (Q, S, P and O fragments in registers, fragments gathered per <see cref="FragmentLoading.Current"/>, KV sub-tiles staged per
/// <see cref="Staging(ComputeDevice, BlockSparseParams, BlockSparseTensorCoreTile)"/>); other head dims
/// run the version-1 <see cref="BlockSparseTensorCoreKernel"/> (S and P staged in shared memory, O in a local array).
/// The backward has no tensor-core path (it runs the float32-math kernels).
/// </summary>
internal static class BlockSparseTensorCore
{
    /// <summary>Bytes of static shared memory the version-1 kernel declares (scores, row statistics, emulation scratch).</summary>
    public const int StaticSharedBytes =
        (BlockSparseTensorCoreKernel.MaxScores + (3 * 16 * BlockSparseTensorCoreKernel.MaxWarps)) * sizeof(float)
        + (TensorCore.ScratchWordsPerWarp * BlockSparseTensorCoreKernel.MaxWarps * sizeof(uint));

    /// <summary>Bytes of static shared memory the register-resident kernels declare (the emulation scratch only).</summary>
    public const int RegisterStaticSharedBytes = TensorCore.ScratchWordsPerWarp * BlockSparseTensorCoreKernel.MaxWarps * sizeof(uint);

    /// <summary>Whether the problem runs on a generated register-resident kernel: D = Dv with a generated variant.</summary>
    public static bool UsesRegisterKernel(BlockSparseParams p) => p.HeadDim == p.ValueDim && BlockSparseRegisterKernels.Supports(p.HeadDim);

    /// <summary>
    /// Dynamic shared memory in 16-bit words with <paramref name="staging"/>: for the register-resident kernels a Q tile and per
    /// KV buffer (two with <see cref="KvStagingKind.Async"/>, one with <see cref="KvStagingKind.Elements"/>) K and V tiles, rows
    /// padded to <see cref="BlockSparseRegisterKernels.RowStride"/>; for version 1 Q, K, V and P tiles (no staging choice).
    /// </summary>
    public static int DynamicSharedWords(BlockSparseParams p, BlockSparseTensorCoreTile tile, KvStagingKind staging)
        => UsesRegisterKernel(p)
            ? (tile.Queries + (2 * KvStaging.Buffers(staging) * tile.Keys)) * BlockSparseRegisterKernels.RowStride(p.HeadDim)
            : (tile.Queries * p.HeadDim) + (tile.Keys * (p.HeadDim + p.ValueDim)) + (tile.Queries * tile.Keys);

    /// <summary>Dynamic shared memory in 16-bit words with the preferred staging (<see cref="KvStaging.Current"/>).</summary>
    public static int DynamicSharedWords(BlockSparseParams p, BlockSparseTensorCoreTile tile) => DynamicSharedWords(p, tile, KvStaging.Current);

    /// <summary>Static shared memory of the kernel that runs this problem, in bytes.</summary>
    public static int StaticBytes(BlockSparseParams p) => UsesRegisterKernel(p) ? RegisterStaticSharedBytes : StaticSharedBytes;

    /// <summary>Shared memory per group in bytes, static and dynamic, with <paramref name="staging"/>.</summary>
    public static int SharedBytes(BlockSparseParams p, BlockSparseTensorCoreTile tile, KvStagingKind staging)
        => StaticBytes(p) + (DynamicSharedWords(p, tile, staging) * sizeof(ushort));

    /// <summary>Shared memory per group in bytes, static and dynamic, with the preferred staging (<see cref="KvStaging.Current"/>).</summary>
    public static int SharedBytes(BlockSparseParams p, BlockSparseTensorCoreTile tile) => SharedBytes(p, tile, KvStaging.Current);

    /// <summary>
    /// The KV staging a register-resident launch of this problem and tile uses on <paramref name="device"/> for aligned views: the
    /// preferred one (<see cref="KvStaging.Current"/>) when its footprint fits the device's shared memory (beyond 48 KB through the
    /// CUDA opt-in that <see cref="ComputeDevice.PrepareSharedMemory{TDelegate}(TDelegate, in KernelConfig)"/> sets up), else the single-buffer
    /// <see cref="KvStagingKind.Elements"/> (which <see cref="Check"/> requires to fit).
    /// </summary>
    public static KvStagingKind Staging(ComputeDevice device, BlockSparseParams p, BlockSparseTensorCoreTile tile)
        => KvStaging.Choose(device, p.HeadDim, p.ValueDim, kind => (long)DynamicSharedWords(p, tile, kind) * sizeof(ushort), StaticBytes(p));

    /// <summary>
    /// <see cref="Staging(ComputeDevice, BlockSparseParams, BlockSparseTensorCoreTile)"/> for these views:
    /// <see cref="KvStagingKind.Elements"/> where 16-byte copies cannot read them (D not a multiple of 8, D ≠ Dv, or a K or V view
    /// whose start is not 16-byte aligned, e.g. a sub-view at an odd element offset: <see cref="KvStaging.Aligned"/>).
    /// </summary>
    public static KvStagingKind Staging(
        ComputeDevice device, BlockSparseParams p, BlockSparseTensorCoreTile tile, ArrayView<ushort> key, ArrayView<ushort> value)
        => KvStaging.Choose(device, p.HeadDim, p.ValueDim, kind => (long)DynamicSharedWords(p, tile, kind) * sizeof(ushort), StaticBytes(p), key, value);

    /// <summary>
    /// The tile for a problem: with no requested work split, 64 queries (32 when D or Dv exceeds 128) and KV
    /// sub-tiles of 32 keys (16 above D = 128; the register kernel's key chunk — 64 for D = 32, 64 and 32 for
    /// D = 128 — where a register-resident kernel runs), each cut to the block size rounded up to 16; a requested
    /// split (queries, keys) is cut the same way and must then be a multiple of 16 (else <see cref="Check"/> refuses it).
    /// </summary>
    public static BlockSparseTensorCoreTile Tile(BlockSparseParams p, int? requestedQueries, int? requestedKeys)
    {
        var large = Math.Max(p.HeadDim, p.ValueDim) > 128;
        var queries = requestedQueries ?? (large ? 32 : 64);
        var keys = requestedKeys ?? (UsesRegisterKernel(p) ? BlockSparseRegisterKernels.KeyChunk(p.HeadDim) : large ? 16 : 32);
        return new BlockSparseTensorCoreTile(Math.Min(queries, RoundUp16(p.QueryBlock)), Math.Min(keys, RoundUp16(p.KeyBlock)));
    }

    /// <summary>Why the tensor-core forward cannot run this problem and tile on the device, or null.</summary>
    public static string? Check(ComputeDevice device, BlockSparseParams p, BlockSparseTensorCoreTile tile)
    {
        if (p.HeadDim % 16 != 0 || p.ValueDim % 8 != 0 || p.HeadDim < 16 || p.ValueDim < 8 || p.ValueDim > BlockSparseTensorCoreKernel.MaxValueDim)
        {
            return $"the tensor-core kernel needs D % 16 == 0 and Dv % 8 == 0 with Dv ≤ {BlockSparseTensorCoreKernel.MaxValueDim} (D={p.HeadDim}, Dv={p.ValueDim})";
        }

        if (tile.Queries < 16 || tile.Queries % 16 != 0 || tile.Warps > BlockSparseTensorCoreKernel.MaxWarps
            || tile.Keys < 16 || tile.Keys % 16 != 0 || (!UsesRegisterKernel(p) && tile.Queries * tile.Keys > BlockSparseTensorCoreKernel.MaxScores))
        {
            return $"tile {tile}: the tensor-core kernel needs 16, 32, 48 or 64 queries and a KV sub-tile that is a multiple of 16";
        }

        var accelerator = device.Accelerator;
        if (accelerator.WarpSize != 32)
        {
            return $"the tensor-core kernel needs 32-lane warps; {device.Name} has {accelerator.WarpSize}";
        }

        if (tile.Warps * 32 > accelerator.MaxNumThreadsPerGroup)
        {
            return $"tile {tile} needs {tile.Warps * 32} threads per group; {device.Name} allows {accelerator.MaxNumThreadsPerGroup}";
        }

        // The single-buffer footprint must fit; the launch double-buffers where that fits too (Staging).
        if (device.CheckSharedMemory(
                $"tile {tile} with D={p.HeadDim}, Dv={p.ValueDim}", (long)DynamicSharedWords(p, tile, KvStagingKind.Elements) * sizeof(ushort), StaticBytes(p)) is { } why)
        {
            return why;
        }

        var groups = (long)p.QueryBlocks * tile.QueryGroupsPerBlock(p.QueryBlock);
        if (groups > int.MaxValue || p.Heads > 65535 || p.Batch > 65535)
        {
            return $"the grid ({groups} groups × {p.Heads} heads × {p.Batch} batch) exceeds the launch limits";
        }

        return null;
    }

    public static void Forward<TFormat, TMask, TBias>(
        ComputeDevice device, AcceleratorStream stream, BlockSparseParams p, BlockSparseTensorCoreTile tile, BlockList blocks, TMask mask, TBias bias,
        ArrayView<ushort> query, ArrayView<ushort> key, ArrayView<ushort> value, ArrayView<ushort> output, ArrayView<float> lse)
        where TFormat : struct, IHalfFormat
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
    {
        var kernels = device.Kernels(a => new BlockSparseTensorCoreKernelSet<TFormat, TMask, TBias>(a));
        var registers = UsesRegisterKernel(p);
        var staging = registers ? Staging(device, p, tile, key, value) : KvStagingKind.Elements;
        var config = new KernelConfig(
            new Index3D(p.QueryBlocks * tile.QueryGroupsPerBlock(p.QueryBlock), p.Heads, p.Batch),
            new Index3D(tile.Warps * 32, 1, 1),
            SharedMemoryConfig.RequestDynamic<ushort>(DynamicSharedWords(p, tile, staging)));
        var kernel = registers ? kernels.Registers(p.HeadDim, FragmentLoading.Current, staging) : kernels.Forward;
        device.PrepareSharedMemory(kernel.Launch, config);
        kernel.Launch(stream, config, p, tile, blocks, mask, bias, query, key, value, output, lse, lse.Length > 0 ? 1 : 0);
    }

    private static int RoundUp16(int n) => (n + 15) / 16 * 16;
}

/// <summary>A tensor-core forward launch waiting for its mask and bias structs (see <see cref="BlockSparseDispatch"/>).</summary>
internal sealed class BlockSparseTensorCorePass<TFormat>(
    ComputeDevice device, AcceleratorStream stream, BlockSparseParams p, BlockSparseTensorCoreTile tile, BlockList blocks,
    ArrayView<ushort> query, ArrayView<ushort> key, ArrayView<ushort> value, ArrayView<ushort> output, ArrayView<float> lse) : IBlockSparsePass
    where TFormat : struct, IHalfFormat
{
    public void Run<TMask, TBias>(TMask mask, TBias bias)
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias
        => BlockSparseTensorCore.Forward<TFormat, TMask, TBias>(device, stream, p, tile, blocks, mask, bias, query, key, value, output, lse);
}
