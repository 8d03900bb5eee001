using System.Runtime.CompilerServices;
using ILGPU;
using Natten.Kernels.Common;
using Natten.Kernels.Cuda;
using Natten.Kernels.Runtime;

namespace Natten.Kernels.Fused;

/// <summary>
/// How the generated register-resident tensor-core kernels stage their per-step tiles in shared memory, and how far ahead:
/// the NA forward and dQ kernels their KV sub-tiles (through <see cref="KvStaging.Stage{TStaging}"/>), the dK/dV kernel its Q and dO
/// rows (<c>FnaRegisterBackwardTile.Stage</c>) and the block-sparse forward its key blocks' sub-tiles
/// (<c>BlockSparseRegisterTile.Stage</c>), all on the same schedule.
/// The kernel keeps <see cref="Buffers"/> KV buffers (each K [sub-tile × RowStride] then V [sub-tile × RowStride]) and runs
/// one schedule for every implementation: issue the copies of sub-tile 0 … <see cref="Lookahead"/> − 1 before the loop; per
/// step, barrier (every warp is done with the buffer about to be refilled), issue sub-tile step + <see cref="Lookahead"/>
/// into buffer (step + Lookahead) % Buffers, <see cref="Commit"/>, <see cref="Wait"/> (sub-tile step has landed), barrier,
/// compute on buffer step % Buffers. Implementations: <see cref="AsyncStaging"/> (16-byte <c>cp.async</c>, two buffers,
/// one sub-tile ahead) and <see cref="ElementStaging"/> (the synchronous element-by-element staging, one buffer).
/// </summary>
/// <remarks>Requires D = Dv (the register-resident kernels' case) and, for <see cref="AsyncStaging"/>, 16-byte aligned rows.</remarks>
internal interface IKvStaging
{
    /// <summary>KV buffers in dynamic shared memory.</summary>
    static abstract int Buffers { get; }

    /// <summary>Sub-tiles whose copies are in flight while one is computed (Buffers − 1).</summary>
    static abstract int Lookahead { get; }

    /// <summary>Issues the copies of the neighborhood sub-tile at group coordinates (a0, a1, a2); slots past the dilation group are zero.</summary>
    static abstract void Neighborhood(
        ProblemParams p, FnaTileShape tile, TileAxis axis0, TileAxis axis1, TileAxis axis2, int a0, int a1, int a2, int batch, int kvHead,
        ArrayView<ushort> key, ArrayView<ushort> value, ArrayView<ushort> kTile, ArrayView<ushort> vTile, int stride, int tid, int threads);

    /// <summary>Issues the copies of additional tokens m … m + keys − 1 (zero past the last one).</summary>
    static abstract void Additional(
        ProblemParams p, int keys, int m, int batch, int kvHead, ArrayView<ushort> key, ArrayView<ushort> value,
        ArrayView<ushort> kTile, ArrayView<ushort> vTile, int stride, int tid, int threads);

    /// <summary>Closes this thread's copies issued since the last commit into a group.</summary>
    static abstract void Commit();

    /// <summary>Waits until every group of this thread but the newest <see cref="Lookahead"/> has landed.</summary>
    static abstract void Wait();
}

/// <summary>
/// 16-byte asynchronous staging (<see cref="AsyncCopy"/>), double-buffered: thread <c>tid</c> takes chunks tid, tid + threads,
/// … of the sub-tile's <c>keys × D/8</c> chunks; one key-row computation per chunk serves its K and its V copy. On the CPU
/// accelerator the copies are synchronous (exact). Needs D = Dv, D % 8 == 0 and 16-byte aligned K, V (and additional K, V)
/// views; the host falls back to <see cref="ElementStaging"/> otherwise (<see cref="KvStaging.Aligned"/>).
/// </summary>
internal readonly struct AsyncStaging : IKvStaging
{
    public static int Buffers => 2;

    public static int Lookahead => 1;

    public static void Neighborhood(
        ProblemParams p, FnaTileShape tile, TileAxis axis0, TileAxis axis1, TileAxis axis2, int a0, int a1, int a2, int batch, int kvHead,
        ArrayView<ushort> key, ArrayView<ushort> value, ArrayView<ushort> kTile, ArrayView<ushort> vTile, int stride, int tid, int threads)
    {
        var chunks = p.HeadDim / AsyncCopy.Elements;
        for (var c = tid; c < tile.KeyTile * chunks; c += threads)
        {
            var slot = c / chunks;
            var column = (c - (slot * chunks)) * AsyncCopy.Elements;
            var row = TileAxis.KeyRow(p, tile, axis0, axis1, axis2, a0, a1, a2, slot, batch, kvHead);
            var at = (slot * stride) + column;
            AsyncCopy.Copy16(kTile, at, key, (row * p.HeadDim) + column, row >= 0);
            AsyncCopy.Copy16(vTile, at, value, (row * p.ValueDim) + column, row >= 0);
        }
    }

    public static void Additional(
        ProblemParams p, int keys, int m, int batch, int kvHead, ArrayView<ushort> key, ArrayView<ushort> value,
        ArrayView<ushort> kTile, ArrayView<ushort> vTile, int stride, int tid, int threads)
    {
        var chunks = p.HeadDim / AsyncCopy.Elements;
        for (var c = tid; c < keys * chunks; c += threads)
        {
            var slot = c / chunks;
            var column = (c - (slot * chunks)) * AsyncCopy.Elements;
            var token = m + slot;
            var row = ((((long)batch * p.AdditionalTokens) + token) * p.KvHeads) + kvHead;
            var at = (slot * stride) + column;
            AsyncCopy.Copy16(kTile, at, key, (row * p.HeadDim) + column, token < p.AdditionalTokens);
            AsyncCopy.Copy16(vTile, at, value, (row * p.ValueDim) + column, token < p.AdditionalTokens);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Commit() => AsyncCopy.Commit();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Wait() => AsyncCopy.WaitAllButNewest();
}

/// <summary>
/// The synchronous staging the kernels had before <see cref="AsyncStaging"/>: one 16-bit load and one key-row computation per
/// element (<see cref="FnaTensorCoreKernel.StageNeighborhood(ProblemParams, FnaTileShape, TileAxis, TileAxis, TileAxis, int, int, int, int, int, ArrayView{ushort}, ArrayView{ushort}, ArrayView{ushort}, int, ArrayView{ushort}, int, int, int)"/>),
/// one buffer, nothing ahead: barrier, stage, barrier, compute. Runs any alignment.
/// </summary>
internal readonly struct ElementStaging : IKvStaging
{
    public static int Buffers => 1;

    public static int Lookahead => 0;

    public static void Neighborhood(
        ProblemParams p, FnaTileShape tile, TileAxis axis0, TileAxis axis1, TileAxis axis2, int a0, int a1, int a2, int batch, int kvHead,
        ArrayView<ushort> key, ArrayView<ushort> value, ArrayView<ushort> kTile, ArrayView<ushort> vTile, int stride, int tid, int threads)
        => FnaTensorCoreKernel.StageNeighborhood(p, tile, axis0, axis1, axis2, a0, a1, a2, batch, kvHead, key, value, kTile, stride, vTile, stride, tid, threads);

    public static void Additional(
        ProblemParams p, int keys, int m, int batch, int kvHead, ArrayView<ushort> key, ArrayView<ushort> value,
        ArrayView<ushort> kTile, ArrayView<ushort> vTile, int stride, int tid, int threads)
        => FnaTensorCoreKernel.StageAdditional(p, keys, m, batch, kvHead, key, value, kTile, stride, vTile, stride, tid, threads);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Commit()
    {
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Wait()
    {
    }
}

/// <summary>Which <see cref="IKvStaging"/> the register-resident forward is compiled with.</summary>
internal enum KvStagingKind
{
    /// <summary><see cref="AsyncStaging"/>: 16-byte <c>cp.async</c>, double-buffered (the default).</summary>
    Async,

    /// <summary><see cref="ElementStaging"/>: synchronous, element by element, one buffer (the previous staging).</summary>
    Elements,
}

/// <summary>
/// The KV staging the forward launcher prefers: <see cref="KvStagingKind.Async"/> unless the environment variable
/// <see cref="EnvironmentVariable"/> says <c>elements</c> (A/B timing on a GPU). Tests pin a kind with <see cref="Use"/>. The
/// launcher still takes <see cref="KvStagingKind.Elements"/> where a view is not 16-byte aligned or the double buffer does not
/// fit the device's shared memory (<see cref="FnaTensorCore.Staging(Runtime.ComputeDevice, ProblemParams, FnaTileShape, ArrayView{ushort}, ArrayView{ushort}, ArrayView{ushort}, ArrayView{ushort})"/>).
/// </summary>
internal static class KvStaging
{
    public const string EnvironmentVariable = "NATTEN_KV_STAGING";

    private static readonly Lazy<KvStagingKind> Configured = new(() => Parse(Environment.GetEnvironmentVariable(EnvironmentVariable)));
    private static KvStagingKind? _pinned;

    public static KvStagingKind Current => _pinned ?? Configured.Value;

    /// <summary>Reads the variable: unset, empty, <c>async</c> or <c>cp.async</c> → Async; <c>elements</c> or <c>sync</c> → Elements.</summary>
    public static KvStagingKind Parse(string? value) => value?.Trim().ToLowerInvariant() switch
    {
        null or "" or "async" or "cp.async" => KvStagingKind.Async,
        "elements" or "sync" => KvStagingKind.Elements,
        _ => throw new InvalidOperationException($"{EnvironmentVariable}='{value}': use 'async' (16-byte cp.async, double-buffered, the default) or 'elements'."),
    };

    /// <summary>KV buffers of <paramref name="kind"/> (<see cref="IKvStaging.Buffers"/>).</summary>
    public static int Buffers(KvStagingKind kind) => kind == KvStagingKind.Async ? AsyncStaging.Buffers : ElementStaging.Buffers;

    /// <summary>
    /// Whether 16-byte copies can read <paramref name="view"/>'s rows: its first element is 16-byte aligned (rows of a multiple of
    /// 8 elements then are too). Views the library allocates always are; a sub-view at an odd element offset is not.
    /// </summary>
    public static bool Aligned(ArrayView<ushort> view)
        => view.Length == 0
            || ((((IArrayView)view).Buffer.NativePtr.ToInt64() + ((IContiguousArrayView)view).IndexInBytes) & 15) == 0;

    /// <summary>
    /// The one rule for which staging a register-resident launch uses on <paramref name="device"/>: the preferred one
    /// (<see cref="Current"/>, <c>NATTEN_KV_STAGING</c>) when 16-byte copies can stream its rows — D = Dv, D a multiple of 8 and
    /// every streamed view (empty ones aside) 16-byte aligned, see <see cref="Aligned"/> — and its footprint
    /// (<paramref name="dynamicBytes"/> of that kind, beside <paramref name="staticBytes"/>) fits the device's shared memory
    /// (beyond 48 KB through the CUDA opt-in); else <see cref="KvStagingKind.Elements"/>, whose footprint the kernels' checks
    /// require to fit.
    /// </summary>
    public static KvStagingKind Choose(
        ComputeDevice device, int headDim, int valueDim, Func<KvStagingKind, long> dynamicBytes, int staticBytes, params ReadOnlySpan<ArrayView<ushort>> streamed)
    {
        var preferred = Current;
        if (preferred == KvStagingKind.Elements || headDim != valueDim || headDim % AsyncCopy.Elements != 0)
        {
            return KvStagingKind.Elements;
        }

        foreach (var view in streamed)
        {
            if (!Aligned(view))
            {
                return KvStagingKind.Elements;
            }
        }

        return device.CheckSharedMemory(string.Empty, dynamicBytes(preferred), staticBytes) is null ? preferred : KvStagingKind.Elements;
    }

    /// <summary>Pins <paramref name="kind"/> until the returned scope is disposed (tests; not thread-safe against concurrent launches).</summary>
    public static IDisposable Use(KvStagingKind kind)
    {
        var previous = _pinned;
        _pinned = kind;
        return new Scope(() => _pinned = previous);
    }

    /// <summary>
    /// Issues the copies of staged step <paramref name="step"/> of the forward's loop (neighborhood sub-tiles first, then the
    /// additional tokens) into <paramref name="buffer"/>: K rows at 0, V rows at <c>keys · stride</c>.
    /// </summary>
    public static void Stage<TStaging>(
        ProblemParams p, FnaTileShape tile, TileAxis axis0, TileAxis axis1, TileAxis axis2, int steps1, int steps2, int neighborhood, int step,
        int batch, int kvHead, ArrayView<ushort> key, ArrayView<ushort> value, ArrayView<ushort> additionalKey, ArrayView<ushort> additionalValue,
        ArrayView<ushort> buffer, int stride, int tid, int threads)
        where TStaging : struct, IKvStaging
    {
        var keys = tile.KeyTile;
        var kTile = buffer.SubView(0, keys * stride);
        var vTile = buffer.SubView(keys * stride, keys * stride);
        if (step < neighborhood)
        {
            var a0 = axis0.RangeStart + (step / steps2 / steps1 * tile.K0);
            var a1 = axis1.RangeStart + (step / steps2 % steps1 * tile.K1);
            var a2 = axis2.RangeStart + (step % steps2 * tile.K2);
            TStaging.Neighborhood(p, tile, axis0, axis1, axis2, a0, a1, a2, batch, kvHead, key, value, kTile, vTile, stride, tid, threads);
        }
        else
        {
            TStaging.Additional(p, keys, (step - neighborhood) * keys, batch, kvHead, additionalKey, additionalValue, kTile, vTile, stride, tid, threads);
        }
    }

    private sealed class Scope(Action restore) : IDisposable
    {
        public void Dispose() => restore();
    }
}
