using ILGPU;
using ILGPU.Runtime.Cuda;

namespace Natten.Kernels.Cuda;

/// <summary>
/// TF32 tensor-core products for float32 data: <c>mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32</c>
/// (sm_80) and a lane-exact emulation with the same fragment layout for the CPU accelerator.
/// TF32 keeps float32's 8-bit exponent and 10 of its 23 mantissa bits; the products accumulate in float32.
/// Operands are rounded to TF32 once, when staged (<see cref="Round"/>, round to nearest with ties away
/// from zero as <c>cvt.rna.tf32.f32</c>), so the tensor core and the emulation see identical values.
/// </summary>
/// <remarks>
/// Fragment layout of m16n8k8 with TF32 inputs (lane = 4·g + t, g = lane / 4, t = lane % 4), from the PTX ISA:
/// A (16×8, row-major) a0 = (g, t), a1 = (g+8, t), a2 = (g, t+4), a3 = (g+8, t+4);
/// B (8×8, column) b0 = (k = t, n = g), b1 = (k = t+4, n = g);
/// C/D (16×8 f32) as for m16n8k16: c0, c1 = (g, 2t, 2t+1), c2, c3 = (g+8, 2t, 2t+1).
/// </remarks>
internal static class Tf32
{
    /// <summary>Rounds to TF32 (10 mantissa bits; ties away from zero); infinities and NaNs pass unchanged.</summary>
    public static float Round(float value)
    {
        var bits = Interop.FloatAsInt(value);
        if ((bits & 0x7F800000u) == 0x7F800000u)
        {
            return value;
        }

        // Sign-magnitude: adding half of the dropped range to the magnitude bits rounds ties away from zero;
        // a carry into the exponent is the correct result (up to infinity).
        return Interop.IntAsFloat((bits + 0x1000u) & 0xFFFFE000u);
    }

    /// <summary>D = A·B + D for one m16n8k8 TF32 tile (warp-collective).</summary>
    public static void Mma(
        uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, ref float c0, ref float c1, ref float c2, ref float c3, ArrayView<uint> scratch)
    {
        if (CudaAsm.IsSupported)
        {
            Ref<float> d0 = c0, d1 = c1, d2 = c2, d3 = c3;
            Input<uint> ia0 = a0, ia1 = a1, ia2 = a2, ia3 = a3, ib0 = b0, ib1 = b1;
            CudaAsm.EmitRef(
                "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};",
                ref d0, ref d1, ref d2, ref d3, ref ia0, ref ia1, ref ia2, ref ia3, ref ib0, ref ib1);
            (c0, c1, c2, c3) = (d0.Value, d1.Value, d2.Value, d3.Value);
        }
        else
        {
            Emulate(a0, a1, a2, a3, b0, b1, ref c0, ref c1, ref c2, ref c3, scratch);
        }
    }

    /// <summary>
    /// The m16n8k8 product lane by lane (<see cref="TensorCore.EmulateFragments{TDot}"/> with the TF32 layout):
    /// each lane publishes its six registers, the group synchronises, each lane sums its four outputs over k = 0…7.
    /// Group-wide barriers: uniform calls only.
    /// </summary>
    public static void Emulate(
        uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, ref float c0, ref float c1, ref float c2, ref float c3, ArrayView<uint> scratch)
        => TensorCore.EmulateFragments<Tf32FragmentDot>(a0, a1, a2, a3, b0, b1, ref c0, ref c1, ref c2, ref c3, scratch);

    /// <summary>C(16×8) += A[aRow0…+16, 0…k) · B[bRow0…+8, 0…k)ᵀ on TF32-rounded floats (k a multiple of 8).</summary>
    public static void ProductNT(
        ArrayView<float> a, int aStride, int aRow0, ArrayView<float> b, int bStride, int bRow0, int kLength, int g, int t,
        ref float c0, ref float c1, ref float c2, ref float c3, ArrayView<uint> scratch)
    {
        for (var ks = 0; ks < kLength / 8; ks++)
        {
            var col = (ks * 8) + t;
            Mma(
                Bits(a, ((aRow0 + g) * aStride) + col), Bits(a, ((aRow0 + g + 8) * aStride) + col),
                Bits(a, ((aRow0 + g) * aStride) + col + 4), Bits(a, ((aRow0 + g + 8) * aStride) + col + 4),
                Bits(b, ((bRow0 + g) * bStride) + col), Bits(b, ((bRow0 + g) * bStride) + col + 4),
                ref c0, ref c1, ref c2, ref c3, scratch);
        }
    }

    /// <summary>C(16×8) += A[aRow0…+16, 0…k) · B[0…k, bCol0…+8) on TF32-rounded floats (k a multiple of 8).</summary>
    public static void ProductNN(
        ArrayView<float> a, int aStride, int aRow0, ArrayView<float> b, int bStride, int bCol0, int kLength, int g, int t,
        ref float c0, ref float c1, ref float c2, ref float c3, ArrayView<uint> scratch)
    {
        var column = bCol0 + g;
        for (var ks = 0; ks < kLength / 8; ks++)
        {
            var k = (ks * 8) + t;
            Mma(
                Bits(a, ((aRow0 + g) * aStride) + k), Bits(a, ((aRow0 + g + 8) * aStride) + k),
                Bits(a, ((aRow0 + g) * aStride) + k + 4), Bits(a, ((aRow0 + g + 8) * aStride) + k + 4),
                Bits(b, (k * bStride) + column), Bits(b, ((k + 4) * bStride) + column),
                ref c0, ref c1, ref c2, ref c3, scratch);
        }
    }

    private static uint Bits(ArrayView<float> values, int index) => Interop.FloatAsInt(values[index]);
}

/// <summary>m16n8k8 with TF32 inputs (one per register): A a0..a3 = (g, t), (g+8, t), (g, t+4), (g+8, t+4); B b0, b1 = (t, g), (t+4, g).</summary>
internal readonly struct Tf32FragmentDot : IFragmentDot
{
    public static float Dot(ArrayView<uint> scratch, int row, int col)
    {
        var sum = 0f;
        for (var k = 0; k < 8; k++)
        {
            var aLane = ((row % 8) * 4) + (k % 4);
            var aReg = (row >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0);
            var bLane = (col * 4) + (k % 4);
            var bReg = 4 + (k >= 4 ? 1 : 0);
            sum += Interop.IntAsFloat(scratch[(aLane * 6) + aReg]) * Interop.IntAsFloat(scratch[(bLane * 6) + bReg]);
        }

        return sum;
    }
}
