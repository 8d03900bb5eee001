using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Natten.Kernels.Cpu;

/// <summary>
/// Data movement of the CPU kernels: short copies inlined as vector moves (the tile gathers copy a
/// few hundred bytes at a time, where a call to memmove costs as much as the copy), and an 8 × 8
/// in-register transpose (AVX) for the heads-last to channel-major copies, with a scalar fallback.
/// </summary>
internal static unsafe class CpuCopy
{
    /// <summary>Copies <paramref name="count"/> floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Copy(float* source, float* destination, int count)
    {
        var i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 8 <= count; i += 8)
            {
                Vector256.Load(source + i).Store(destination + i);
            }
        }

        for (; i < count; i++)
        {
            destination[i] = source[i];
        }
    }

    /// <summary>Sets <paramref name="count"/> floats to 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Clear(float* destination, int count)
    {
        var i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 8 <= count; i += 8)
            {
                Vector256<float>.Zero.Store(destination + i);
            }
        }

        for (; i < count; i++)
        {
            destination[i] = 0;
        }
    }

    /// <summary>
    /// <c>to[c · toStride + r] = from[r · fromStride + c]</c> for <paramref name="rows"/> × <paramref name="columns"/>:
    /// 8 × 8 blocks in registers where AVX is available, the rest element by element.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Transpose(float* from, nint fromStride, float* to, nint toStride, int rows, int columns)
    {
        var r = 0;
        if (Avx.IsSupported)
        {
            for (; r + 8 <= rows; r += 8)
            {
                var c = 0;
                for (; c + 8 <= columns; c += 8)
                {
                    Transpose8x8(from + (r * fromStride) + c, fromStride, to + (c * toStride) + r, toStride);
                }

                for (; c < columns; c++)
                {
                    for (var i = 0; i < 8; i++)
                    {
                        to[(c * toStride) + r + i] = from[((r + i) * fromStride) + c];
                    }
                }
            }
        }

        for (; r < rows; r++)
        {
            for (var c = 0; c < columns; c++)
            {
                to[(c * toStride) + r] = from[(r * fromStride) + c];
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8x8(float* from, nint fromStride, float* to, nint toStride)
    {
        var r0 = Avx.LoadVector256(from);
        var r1 = Avx.LoadVector256(from + fromStride);
        var r2 = Avx.LoadVector256(from + (2 * fromStride));
        var r3 = Avx.LoadVector256(from + (3 * fromStride));
        var r4 = Avx.LoadVector256(from + (4 * fromStride));
        var r5 = Avx.LoadVector256(from + (5 * fromStride));
        var r6 = Avx.LoadVector256(from + (6 * fromStride));
        var r7 = Avx.LoadVector256(from + (7 * fromStride));

        // Pairs of rows interleaved, then quadruples, then the 128-bit halves swapped into place.
        var t0 = Avx.UnpackLow(r0, r1);
        var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3);
        var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5);
        var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7);
        var t7 = Avx.UnpackHigh(r6, r7);
        var u0 = Avx.Shuffle(t0, t2, 0x44);
        var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44);
        var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44);
        var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44);
        var u7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Store(to, Avx.Permute2x128(u0, u4, 0x20));
        Avx.Store(to + toStride, Avx.Permute2x128(u1, u5, 0x20));
        Avx.Store(to + (2 * toStride), Avx.Permute2x128(u2, u6, 0x20));
        Avx.Store(to + (3 * toStride), Avx.Permute2x128(u3, u7, 0x20));
        Avx.Store(to + (4 * toStride), Avx.Permute2x128(u0, u4, 0x31));
        Avx.Store(to + (5 * toStride), Avx.Permute2x128(u1, u5, 0x31));
        Avx.Store(to + (6 * toStride), Avx.Permute2x128(u2, u6, 0x31));
        Avx.Store(to + (7 * toStride), Avx.Permute2x128(u3, u7, 0x31));
    }
}
