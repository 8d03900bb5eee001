using ILGPU;

namespace Natten.Kernels.Cuda;

/// <summary>
/// Warp-level tile products on 16-bit operands in shared memory, built on <see cref="IHalfFormat.Mma"/>:
/// one warp computes a 16×8 f32 tile (lane (g, t) holds rows g, g+8 and columns 2t, 2t+1) of
/// <c>A·Bᵀ</c> (<see cref="ProductNT{TFormat}"/>, B stored as rows of the k dimension, like K or Q) or
/// <c>A·B</c> (<see cref="ProductNN{TFormat}"/>, B stored row-major over k, like V or dO).
/// A is row-major with <c>aStride</c> 16-bit words per row; k runs over <c>kLength</c> (a multiple of 16).
/// </summary>
internal static class WarpProducts
{
    /// <summary>C(16×8) += A[aRow0…+16, 0…k) · B[bRow0…+8, 0…k)ᵀ.</summary>
    public static void ProductNT<TFormat>(
        ArrayView<ushort> a, int aStride, int aRow0, ArrayView<ushort> b, int bStride, int bRow0, int kLength, int g, int t,
        ref float c0, ref float c1, ref float c2, ref float c3, ArrayView<uint> scratch)
        where TFormat : struct, IHalfFormat
    {
        for (var ks = 0; ks < kLength / 16; ks++)
        {
            var col = (ks * 16) + (2 * t);
            TFormat.Mma(
                Pair(a, ((aRow0 + g) * aStride) + col), Pair(a, ((aRow0 + g + 8) * aStride) + col),
                Pair(a, ((aRow0 + g) * aStride) + col + 8), Pair(a, ((aRow0 + g + 8) * aStride) + col + 8),
                Pair(b, ((bRow0 + g) * bStride) + col), Pair(b, ((bRow0 + g) * bStride) + col + 8),
                ref c0, ref c1, ref c2, ref c3, scratch);
        }
    }

    /// <summary>C(16×8) += A[aRow0…+16, 0…k) · B[0…k, bCol0…+8).</summary>
    public static void ProductNN<TFormat>(
        ArrayView<ushort> a, int aStride, int aRow0, ArrayView<ushort> b, int bStride, int bCol0, int kLength, int g, int t,
        ref float c0, ref float c1, ref float c2, ref float c3, ArrayView<uint> scratch)
        where TFormat : struct, IHalfFormat
    {
        var column = bCol0 + g;
        for (var ks = 0; ks < kLength / 16; ks++)
        {
            var k = (ks * 16) + (2 * t);
            TFormat.Mma(
                Pair(a, ((aRow0 + g) * aStride) + k), Pair(a, ((aRow0 + g + 8) * aStride) + k),
                Pair(a, ((aRow0 + g) * aStride) + k + 8), Pair(a, ((aRow0 + g + 8) * aStride) + k + 8),
                TensorCore.Pack(b[(k * bStride) + column], b[((k + 1) * bStride) + column]),
                TensorCore.Pack(b[((k + 8) * bStride) + column], b[((k + 9) * bStride) + column]),
                ref c0, ref c1, ref c2, ref c3, scratch);
        }
    }

    /// <summary>Stores a 16×8 f32 tile (times <paramref name="scale"/>) into row-major floats at column <paramref name="col0"/>.</summary>
    public static void Store(ArrayView<float> target, int stride, int row0, int col0, int g, int t, float scale, float c0, float c1, float c2, float c3)
    {
        var col = col0 + (2 * t);
        target[((row0 + g) * stride) + col] = c0 * scale;
        target[((row0 + g) * stride) + col + 1] = c1 * scale;
        target[((row0 + g + 8) * stride) + col] = c2 * scale;
        target[((row0 + g + 8) * stride) + col + 1] = c3 * scale;
    }

    private static uint Pair(ArrayView<ushort> values, int index) => TensorCore.Pack(values[index], values[index + 1]);
}
