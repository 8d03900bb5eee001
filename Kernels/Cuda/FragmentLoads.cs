using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime.Cuda;

namespace Natten.Kernels.Cuda;

/// <summary>
/// How a warp gathers m16n8k16 fragments from a tile of 16-bit elements staged in shared memory (rows
/// <c>stride</c> elements apart). Both calls read one 16×16 block at (<c>row0</c>, <c>col0</c>) as four 8×8
/// matrices, in the order r0 = (rows 0–7, columns 0–7), r1 = (rows 8–15, columns 0–7), r2 = (rows 0–7,
/// columns 8–15), r3 = (rows 8–15, columns 8–15), and give lane (g = lane / 4, t = lane % 4) two 16-bit
/// elements of each, the lower-indexed one in the low half:
/// <list type="bullet">
/// <item><see cref="Rows"/>: row g, columns 2t, 2t + 1 of each matrix. For Q rows that is the A fragment of one
/// k-step (a0 … a3 = r0 … r3); for K rows (keys) it is b0 of n-tiles 0 and 1 (r0, r1) and b1 of both (r2, r3).</item>
/// <item><see cref="Columns"/>: rows 2t, 2t + 1 of column g of each matrix. For V rows (keys, value columns) that
/// is b0, b1 of the n-tile of columns 0–7 (r0, r1) and of columns 8–15 (r2, r3).</item>
/// </list>
/// Warp-collective: every lane of the warp calls with the same block. Implementations: <see cref="ElementLoads"/>
/// (each lane reads its own elements) and <see cref="MatrixLoads"/> (<c>ldmatrix</c> on CUDA).
/// </summary>
internal interface IFragmentLoads
{
    static abstract void Rows(ArrayView<ushort> tile, int stride, int row0, int col0, out uint r0, out uint r1, out uint r2, out uint r3);

    static abstract void Columns(ArrayView<ushort> tile, int stride, int row0, int col0, out uint r0, out uint r1, out uint r2, out uint r3);
}

/// <summary>
/// Each lane loads its own fragment elements: a 32-bit word per register for <see cref="IFragmentLoads.Rows"/>
/// (the two elements are adjacent), two 16-bit loads per register for <see cref="IFragmentLoads.Columns"/>.
/// Runs on every accelerator. <c>stride</c> and <c>col0</c> must be even.
/// </summary>
internal readonly struct ElementLoads : IFragmentLoads
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Rows(ArrayView<ushort> tile, int stride, int row0, int col0, out uint r0, out uint r1, out uint r2, out uint r3)
    {
        var lane = Warp.LaneIdx;
        var words = tile.Cast<uint>();
        var top = ((((row0 + (lane / 4)) * stride) + col0) / 2) + (lane % 4);
        var bottom = top + (4 * stride);
        r0 = words[top];
        r1 = words[bottom];
        r2 = words[top + 4];
        r3 = words[bottom + 4];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Columns(ArrayView<ushort> tile, int stride, int row0, int col0, out uint r0, out uint r1, out uint r2, out uint r3)
    {
        var lane = Warp.LaneIdx;
        var top = ((row0 + (2 * (lane % 4))) * stride) + col0 + (lane / 4);
        var bottom = top + (8 * stride);
        r0 = TensorCore.Pack(tile[top], tile[top + stride]);
        r1 = TensorCore.Pack(tile[bottom], tile[bottom + stride]);
        r2 = TensorCore.Pack(tile[top + 8], tile[top + stride + 8]);
        r3 = TensorCore.Pack(tile[bottom + 8], tile[bottom + stride + 8]);
    }
}

/// <summary>
/// <c>ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16</c>: one instruction per block instead of four 32-bit (or
/// eight 16-bit) loads. Lane L points the instruction at row L % 16, column (L / 16)·8 of the block (<see
/// cref="LaneRow"/>: the row of matrix L / 8 with index L % 8); every row address must be 16-byte aligned (stride
/// and col0 multiples of 8 elements, from an aligned tile). ILGPU declares dynamic shared memory with <c>.align</c> 4 or
/// 8; it starts after the static shared memory, so kernels using this keep their static bytes a multiple of 16 (the
/// PTX test checks it; <see cref="AddressSpaceProbe"/> checks the placement on a GPU). Without <c>ldmatrix</c> (the CPU accelerator)
/// the same instruction is modelled lane by lane: each register is read through the row address the owning lane
/// would have supplied, so CI checks the addressing against the fragment layout exactly.
/// </summary>
internal readonly struct MatrixLoads : IFragmentLoads
{
    /// <summary>The element index lane <paramref name="lane"/> supplies to <c>ldmatrix</c> for the block at (row0, col0).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int LaneRow(int stride, int row0, int col0, int lane) => ((row0 + (lane % 16)) * stride) + col0 + ((lane / 16) * 8);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Rows(ArrayView<ushort> tile, int stride, int row0, int col0, out uint r0, out uint r1, out uint r2, out uint r3)
    {
        var lane = Warp.LaneIdx;
        if (CudaAsm.IsSupported)
        {
            Output<uint> o0 = default, o1 = default, o2 = default, o3 = default;
            Input<long> address = SharedAddress.Generic(tile, LaneRow(stride, row0, col0, lane));
            CudaAsm.EmitRef(
                "{ .reg .u64 ldsm; cvta.to.shared.u64 ldsm, %4; ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [ldsm]; }",
                ref o0, ref o1, ref o2, ref o3, ref address);
            (r0, r1, r2, r3) = (o0.Value, o1.Value, o2.Value, o3.Value);
            return;
        }

        // Matrix m, row g comes from lane 8m + g; this lane takes its columns 2t, 2t + 1.
        var g = lane / 4;
        var column = 2 * (lane % 4);
        r0 = Pair(tile, LaneRow(stride, row0, col0, g) + column);
        r1 = Pair(tile, LaneRow(stride, row0, col0, 8 + g) + column);
        r2 = Pair(tile, LaneRow(stride, row0, col0, 16 + g) + column);
        r3 = Pair(tile, LaneRow(stride, row0, col0, 24 + g) + column);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Columns(ArrayView<ushort> tile, int stride, int row0, int col0, out uint r0, out uint r1, out uint r2, out uint r3)
    {
        var lane = Warp.LaneIdx;
        if (CudaAsm.IsSupported)
        {
            Output<uint> o0 = default, o1 = default, o2 = default, o3 = default;
            Input<long> address = SharedAddress.Generic(tile, LaneRow(stride, row0, col0, lane));
            CudaAsm.EmitRef(
                "{ .reg .u64 ldsm; cvta.to.shared.u64 ldsm, %4; ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [ldsm]; }",
                ref o0, ref o1, ref o2, ref o3, ref address);
            (r0, r1, r2, r3) = (o0.Value, o1.Value, o2.Value, o3.Value);
            return;
        }

        // Transposed: this lane takes column g of rows 2t and 2t + 1 of matrix m, which lanes 8m + 2t, + 1 address.
        var g = lane / 4;
        var row = 2 * (lane % 4);
        r0 = TensorCore.Pack(tile[LaneRow(stride, row0, col0, row) + g], tile[LaneRow(stride, row0, col0, row + 1) + g]);
        r1 = TensorCore.Pack(tile[LaneRow(stride, row0, col0, 8 + row) + g], tile[LaneRow(stride, row0, col0, 8 + row + 1) + g]);
        r2 = TensorCore.Pack(tile[LaneRow(stride, row0, col0, 16 + row) + g], tile[LaneRow(stride, row0, col0, 16 + row + 1) + g]);
        r3 = TensorCore.Pack(tile[LaneRow(stride, row0, col0, 24 + row) + g], tile[LaneRow(stride, row0, col0, 24 + row + 1) + g]);
    }

    private static uint Pair(ArrayView<ushort> tile, int index) => TensorCore.Pack(tile[index], tile[index + 1]);
}

/// <summary>
/// The generic address of an element of a view inside a CUDA kernel. ILGPU has no pointers in kernels; its view
/// is (pointer, length) there, so reinterpreting the view struct yields the pointer (measured on an H100, see
/// docs/ILGPU.md). The same holds for shared and global views (the generic address of either). CUDA only: call it under
/// <see cref="CudaAsm.IsSupported"/>.
/// </summary>
internal static class SharedAddress
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long Generic(ArrayView<ushort> view, int element)
    {
        var copy = view;
        return Unsafe.As<ArrayView<ushort>, RawView>(ref copy).Pointer + (2L * element);
    }

    /// <summary>The same for a global view and a 64-bit element offset (rows of large tensors; <see cref="AsyncCopy"/> sources).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long Generic(ArrayView<ushort> view, long element)
    {
        var copy = view;
        return Unsafe.As<ArrayView<ushort>, RawView>(ref copy).Pointer + (2L * element);
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct RawView
    {
        public long Pointer;
        public long Length;
    }
}

/// <summary>Which <see cref="IFragmentLoads"/> the register-resident kernels are compiled with.</summary>
internal enum FragmentLoadKind
{
    /// <summary><see cref="MatrixLoads"/>: <c>ldmatrix</c> on CUDA (the default).</summary>
    Matrix,

    /// <summary><see cref="ElementLoads"/>: each lane loads its own elements.</summary>
    Elements,
}

/// <summary>
/// The fragment loads the launchers use: <see cref="FragmentLoadKind.Matrix"/> unless the environment variable
/// <see cref="EnvironmentVariable"/> says <c>elements</c> (for A/B timing and diagnosis on a GPU). Tests pin a kind
/// with <see cref="Use"/>.
/// </summary>
internal static class FragmentLoading
{
    public const string EnvironmentVariable = "NATTEN_FRAGMENT_LOADS";

    private static readonly Lazy<FragmentLoadKind> Configured = new(() => Parse(Environment.GetEnvironmentVariable(EnvironmentVariable)));
    private static FragmentLoadKind? _pinned;

    public static FragmentLoadKind Current => _pinned ?? Configured.Value;

    /// <summary>Reads the variable: unset, empty, <c>matrix</c> or <c>ldmatrix</c> → Matrix; <c>elements</c> → Elements.</summary>
    public static FragmentLoadKind Parse(string? value) => value?.Trim().ToLowerInvariant() switch
    {
        null or "" or "matrix" or "ldmatrix" => FragmentLoadKind.Matrix,
        "elements" => FragmentLoadKind.Elements,
        _ => throw new InvalidOperationException($"{EnvironmentVariable}='{value}': use 'matrix' (ldmatrix, the default) or 'elements'."),
    };

    /// <summary>Pins <paramref name="kind"/> until the returned scope is disposed (tests; not thread-safe against concurrent launches).</summary>
    public static IDisposable Use(FragmentLoadKind kind)
    {
        var previous = _pinned;
        _pinned = kind;
        return new Scope(() => _pinned = previous);
    }

    private sealed class Scope(Action restore) : IDisposable
    {
        public void Dispose() => restore();
    }
}
