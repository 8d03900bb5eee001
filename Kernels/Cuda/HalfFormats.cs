using ILGPU;
using ILGPU.Runtime.Cuda;

namespace Natten.Kernels.Cuda;

/// <summary>
/// A 16-bit floating-point format carried as raw bits (<see cref="ushort"/>): conversions to and
/// from float32, and the tensor-core product for that input type. BF16 has no ILGPU type, so both
/// formats travel as bits end to end.
/// </summary>
internal interface IHalfFormat
{
    static abstract float ToFloat(ushort bits);

    static abstract ushort FromFloat(float value);

    /// <summary>D = A·B + D for one m16n8k16 tile (warp-collective: every lane of the warp calls it).</summary>
    static abstract void Mma(
        uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, ref float c0, ref float c1, ref float c2, ref float c3, ArrayView<uint> scratch);
}

/// <summary>IEEE binary16.</summary>
internal readonly struct Fp16Format : IHalfFormat
{
    public static float ToFloat(ushort bits) => Interop.IntAsFloat(bits);

    public static ushort FromFloat(float value) => Interop.FloatAsInt((ILGPU.Half)value);

    public static void Mma(
        uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, ref float c0, ref float c1, ref float c2, ref float c3, ArrayView<uint> scratch)
    {
        if (CudaAsm.IsSupported)
        {
            TensorCore.MmaF16(a0, a1, a2, a3, b0, b1, ref c0, ref c1, ref c2, ref c3);
        }
        else
        {
            TensorCore.Emulate<Fp16Format>(a0, a1, a2, a3, b0, b1, ref c0, ref c1, ref c2, ref c3, scratch);
        }
    }
}

/// <summary>bfloat16: the upper half of a float32 (round to nearest even on the way in).</summary>
internal readonly struct Bf16Format : IHalfFormat
{
    public static float ToFloat(ushort bits) => Interop.IntAsFloat((uint)bits << 16);

    public static ushort FromFloat(float value)
    {
        var bits = Interop.FloatAsInt(value);
        if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu) != 0)
        {
            return (ushort)((bits >> 16) | 0x0040u); // NaN stays a (quiet) NaN
        }

        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }

    public static void Mma(
        uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, ref float c0, ref float c1, ref float c2, ref float c3, ArrayView<uint> scratch)
    {
        if (CudaAsm.IsSupported)
        {
            TensorCore.MmaBf16(a0, a1, a2, a3, b0, b1, ref c0, ref c1, ref c2, ref c3);
        }
        else
        {
            TensorCore.Emulate<Bf16Format>(a0, a1, a2, a3, b0, b1, ref c0, ref c1, ref c2, ref c3, scratch);
        }
    }
}
