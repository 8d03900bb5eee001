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

    /// <summary>
    /// The online-softmax output update of one warp's 16 rows: O = O · correction + P·V, with O in per-lane
    /// <paramref name="accumulators"/> (4 per 8-column tile of the value dim, C-fragment layout), each row's
    /// correction in <paramref name="rowScale"/>, P [16·warps × keys] and V [keys × valueDim] 16-bit in shared memory.
    /// </summary>
    public static void RescaleAndAddProductNN<TFormat>(
        int valueDim, int warp, int g, int t, int keys, ArrayView<ushort> pTile, ArrayView<ushort> vTile, ArrayView<float> rowScale,
        ArrayView<float> accumulators, ArrayView<uint> scratch)
        where TFormat : struct, IHalfFormat
    {
        var scaleTop = rowScale[(warp * 16) + g];
        var scaleBottom = rowScale[(warp * 16) + g + 8];
        for (var n = 0; n < valueDim / 8; n++)
        {
            var c0 = accumulators[n * 4] * scaleTop;
            var c1 = accumulators[(n * 4) + 1] * scaleTop;
            var c2 = accumulators[(n * 4) + 2] * scaleBottom;
            var c3 = accumulators[(n * 4) + 3] * scaleBottom;
            ProductNN<TFormat>(pTile, keys, warp * 16, vTile, valueDim, n * 8, keys, g, t, ref c0, ref c1, ref c2, ref c3, scratch);
            accumulators[n * 4] = c0;
            accumulators[(n * 4) + 1] = c1;
            accumulators[(n * 4) + 2] = c2;
            accumulators[(n * 4) + 3] = c3;
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
