using ILGPU;
using ILGPU.Runtime.Cuda;

namespace Natten.Kernels.Cuda;

/// <summary>
/// Tensor-core matrix products through inline PTX (<c>mma.sync.aligned.m16n8k16.row.col</c>, f32
/// accumulation), and a lane-exact emulation of the same instruction for accelerators without it
/// (the CPU accelerator in CI): same fragments in, same fragments out.
/// </summary>
/// <remarks>
/// Fragment layout (PTX ISA, m16n8k16 with 16-bit inputs), with g = lane / 4 and t = lane % 4:
/// A (16×16, row-major) a0 = (row g, cols 2t, 2t+1), a1 = (row g+8, same cols), a2 = (row g, cols 2t+8, 2t+9),
/// a3 = (row g+8, cols 2t+8, 2t+9); B (16×8, "col") b0 = (rows 2t, 2t+1, col g), b1 = (rows 2t+8, 2t+9, col g);
/// C/D (16×8 f32) c0, c1 = (row g, cols 2t, 2t+1), c2, c3 = (row g+8, cols 2t, 2t+1). Each 32-bit register
/// holds two 16-bit values, the lower-indexed one in the low half.
/// </remarks>
internal static class TensorCore
{
    /// <summary>32-bit words of per-warp scratch the emulation needs: 32 lanes × 6 fragment registers.</summary>
    public const int ScratchWordsPerWarp = 32 * 6;

    public static void MmaF16(uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, ref float c0, ref float c1, ref float c2, ref float c3)
    {
        Ref<float> d0 = c0, d1 = c1, d2 = c2, d3 = c3;
        Input<uint> ia0 = a0, ia1 = a1, ia2 = a2, ia3 = a3, ib0 = b0, ib1 = b1;
        CudaAsm.EmitRef(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};",
            ref d0, ref d1, ref d2, ref d3, ref ia0, ref ia1, ref ia2, ref ia3, ref ib0, ref ib1);
        (c0, c1, c2, c3) = (d0.Value, d1.Value, d2.Value, d3.Value);
    }

    public static void MmaBf16(uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, ref float c0, ref float c1, ref float c2, ref float c3)
    {
        Ref<float> d0 = c0, d1 = c1, d2 = c2, d3 = c3;
        Input<uint> ia0 = a0, ia1 = a1, ia2 = a2, ia3 = a3, ib0 = b0, ib1 = b1;
        CudaAsm.EmitRef(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};",
            ref d0, ref d1, ref d2, ref d3, ref ia0, ref ia1, ref ia2, ref ia3, ref ib0, ref ib1);
        (c0, c1, c2, c3) = (d0.Value, d1.Value, d2.Value, d3.Value);
    }

    /// <summary>
    /// The same product computed lane by lane: every lane publishes its six fragment registers to
    /// <paramref name="scratch"/> (its warp's <see cref="ScratchWordsPerWarp"/> words), the group
    /// synchronises, and each lane sums its four outputs over k = 0…15 from the published fragments.
    /// Group-wide barriers: every thread of the group must make the same sequence of calls.
    /// </summary>
    public static void Emulate<TFormat>(
        uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, ref float c0, ref float c1, ref float c2, ref float c3, ArrayView<uint> scratch)
        where TFormat : struct, IHalfFormat
        => EmulateFragments<HalfFragmentDot<TFormat>>(a0, a1, a2, a3, b0, b1, ref c0, ref c1, ref c2, ref c3, scratch);

    /// <summary>
    /// Any m16n8kK product lane by lane, for a fragment layout <typeparamref name="TDot"/> of six 32-bit registers per
    /// lane (A: 4, B: 2) and the common 16×8 C layout: publish, synchronise the group, sum, synchronise again.
    /// </summary>
    public static void EmulateFragments<TDot>(
        uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, ref float c0, ref float c1, ref float c2, ref float c3, ArrayView<uint> scratch)
        where TDot : struct, IFragmentDot
    {
        var lane = Warp.LaneIdx;
        var mine = scratch.SubView(lane * 6, 6);
        mine[0] = a0;
        mine[1] = a1;
        mine[2] = a2;
        mine[3] = a3;
        mine[4] = b0;
        mine[5] = b1;
        Group.Barrier();
        var g = lane / 4;
        var t = lane % 4;
        c0 += TDot.Dot(scratch, g, 2 * t);
        c1 += TDot.Dot(scratch, g, (2 * t) + 1);
        c2 += TDot.Dot(scratch, g + 8, 2 * t);
        c3 += TDot.Dot(scratch, g + 8, (2 * t) + 1);
        Group.Barrier();
    }

    /// <summary>The 16-bit element <paramref name="index"/> (0 = low half) of a packed register.</summary>
    public static ushort Element(uint packed, int index) => (ushort)(index == 0 ? packed & 0xFFFFu : packed >> 16);

    /// <summary>Packs two 16-bit values, <paramref name="low"/> first.</summary>
    public static uint Pack(ushort low, ushort high) => low | ((uint)high << 16);
}

/// <summary>One output element of an emulated mma: Σ_k A(row, k) · B(k, col) read from the published fragments.</summary>
internal interface IFragmentDot
{
    static abstract float Dot(ArrayView<uint> scratch, int row, int col);
}

/// <summary>m16n8k16 with 16-bit inputs (two per register, the lower k in the low half), per the PTX ISA.</summary>
internal readonly struct HalfFragmentDot<TFormat> : IFragmentDot
    where TFormat : struct, IHalfFormat
{
    public static float Dot(ArrayView<uint> scratch, int row, int col)
    {
        var sum = 0f;
        for (var k = 0; k < 16; k++)
        {
            var aLane = ((row % 8) * 4) + ((k % 8) / 2);
            var aReg = (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
            var bLane = (col * 4) + ((k % 8) / 2);
            var bReg = 4 + (k >= 8 ? 1 : 0);
            var a = TensorCore.Element(scratch[(aLane * 6) + aReg], k % 2);
            var b = TensorCore.Element(scratch[(bLane * 6) + bReg], k % 2);
            sum += TFormat.ToFloat(a) * TFormat.ToFloat(b);
        }

        return sum;
    }
}
