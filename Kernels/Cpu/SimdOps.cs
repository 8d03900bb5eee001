using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Natten.Kernels.Cpu;

/// <summary>
/// The few vector operations the CPU kernels use, over one vector type. Kernels are generic over
/// (<typeparamref name="TV"/>, an <see cref="ISimdOps{TV}"/> struct), so the JIT compiles one
/// specialised body per width with every call inlined: 512-bit, 256-bit and 128-bit (the last
/// is also the portable fallback; where it is not hardware accelerated the runtime emulates it).
/// </summary>
internal unsafe interface ISimdOps<TV>
    where TV : struct
{
    /// <summary>Floats per vector.</summary>
    static abstract int Width { get; }

    static abstract TV Zero { get; }

    static abstract TV Load(float* source);

    static abstract void Store(float* destination, TV value);

    static abstract TV Broadcast(float value);

    /// <summary><c>a · b + c</c>, fused.</summary>
    static abstract TV MulAdd(TV a, TV b, TV c);

    static abstract TV Add(TV a, TV b);

    static abstract TV Subtract(TV a, TV b);

    static abstract TV Multiply(TV a, TV b);

    /// <summary>Lane-wise maximum; NaN wins (a NaN score must poison its row, not vanish).</summary>
    static abstract TV Max(TV a, TV b);

    static abstract float Sum(TV value);

    static abstract float MaxAcross(TV value);

    /// <summary>Lanes outside <c>[lo, hi)</c> replaced by <paramref name="fill"/>.</summary>
    static abstract TV KeepLanes(TV value, int lo, int hi, float fill);

    /// <summary>
    /// e^x for x ≤ 88: a few ulp near 0, relative error growing to about 1e-6 at x = -87 (the rounding of
    /// x·log₂e); exactly 0 below x = -87.3 and for -∞; NaN stays NaN.
    /// </summary>
    static abstract TV Exp(TV x);
}

/// <summary>Constants of the shared exp: 2^f for |f| ≤ 1/2 by its Taylor series to degree 7 (relative error ≈ 5e-9).</summary>
internal static class ExpConstants
{
    public const float Log2E = 1.44269504088896341f;
    public const float Max = 127f;
    public const float FlushBelow = -126f;
    public const float C1 = 0.693147180559945309f;
    public const float C2 = 0.240226506959100712f;
    public const float C3 = 0.0555041086648215800f;
    public const float C4 = 0.00961812910762847717f;
    public const float C5 = 0.00133335581464284434f;
    public const float C6 = 0.000154035303933816100f;
    public const float C7 = 0.0000152527338040598403f;
}

/// <summary>512-bit vectors (AVX-512).</summary>
internal readonly unsafe struct Simd512 : ISimdOps<Vector512<float>>
{
    public static int Width => Vector512<float>.Count;

    public static Vector512<float> Zero => Vector512<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load(float* source) => Vector512.Load(source);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(float* destination, Vector512<float> value) => value.Store(destination);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Broadcast(float value) => Vector512.Create(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> MulAdd(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Vector512.FusedMultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Subtract(Vector512<float> a, Vector512<float> b) => a - b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Multiply(Vector512<float> a, Vector512<float> b) => a * b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Max(Vector512<float> a, Vector512<float> b) => Vector512.Max(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector512<float> value) => Vector512.Sum(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float MaxAcross(Vector512<float> value)
    {
        var half = Vector256.Max(value.GetLower(), value.GetUpper());
        var quarter = Vector128.Max(half.GetLower(), half.GetUpper());
        return MathF.Max(MathF.Max(quarter[0], quarter[1]), MathF.Max(quarter[2], quarter[3]));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> KeepLanes(Vector512<float> value, int lo, int hi, float fill)
    {
        var lane = Vector512<int>.Indices;
        var keep = Vector512.GreaterThanOrEqual(lane, Vector512.Create(lo)) & Vector512.LessThan(lane, Vector512.Create(hi));
        return Vector512.ConditionalSelect(keep.AsSingle(), value, Vector512.Create(fill));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp(Vector512<float> x)
    {
        var t = x * Vector512.Create(ExpConstants.Log2E);
        t = Vector512.ConditionalSelect(Vector512.GreaterThan(t, Vector512.Create(ExpConstants.Max)), Vector512.Create(ExpConstants.Max), t);
        var n = Vector512.Round(t);
        var f = t - n;
        var p = Vector512.FusedMultiplyAdd(Vector512.Create(ExpConstants.C7), f, Vector512.Create(ExpConstants.C6));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(ExpConstants.C5));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(ExpConstants.C4));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(ExpConstants.C3));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(ExpConstants.C2));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(ExpConstants.C1));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512<float>.One);
        var scale = Vector512.ShiftLeft(Vector512.ConvertToInt32Native(n) + Vector512.Create(127), 23).AsSingle();
        return Vector512.ConditionalSelect(Vector512.LessThan(t, Vector512.Create(ExpConstants.FlushBelow)), Vector512<float>.Zero, p * scale);
    }
}

/// <summary>256-bit vectors (AVX2 + FMA).</summary>
internal readonly unsafe struct Simd256 : ISimdOps<Vector256<float>>
{
    public static int Width => Vector256<float>.Count;

    public static Vector256<float> Zero => Vector256<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load(float* source) => Vector256.Load(source);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(float* destination, Vector256<float> value) => value.Store(destination);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Broadcast(float value) => Vector256.Create(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> MulAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Vector256.FusedMultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Subtract(Vector256<float> a, Vector256<float> b) => a - b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Multiply(Vector256<float> a, Vector256<float> b) => a * b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Max(Vector256<float> a, Vector256<float> b) => Vector256.Max(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector256<float> value) => Vector256.Sum(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float MaxAcross(Vector256<float> value)
    {
        var half = Vector128.Max(value.GetLower(), value.GetUpper());
        return MathF.Max(MathF.Max(half[0], half[1]), MathF.Max(half[2], half[3]));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> KeepLanes(Vector256<float> value, int lo, int hi, float fill)
    {
        var lane = Vector256<int>.Indices;
        var keep = Vector256.GreaterThanOrEqual(lane, Vector256.Create(lo)) & Vector256.LessThan(lane, Vector256.Create(hi));
        return Vector256.ConditionalSelect(keep.AsSingle(), value, Vector256.Create(fill));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp(Vector256<float> x)
    {
        var t = x * Vector256.Create(ExpConstants.Log2E);
        t = Vector256.ConditionalSelect(Vector256.GreaterThan(t, Vector256.Create(ExpConstants.Max)), Vector256.Create(ExpConstants.Max), t);
        var n = Vector256.Round(t);
        var f = t - n;
        var p = Vector256.FusedMultiplyAdd(Vector256.Create(ExpConstants.C7), f, Vector256.Create(ExpConstants.C6));
        p = Vector256.FusedMultiplyAdd(p, f, Vector256.Create(ExpConstants.C5));
        p = Vector256.FusedMultiplyAdd(p, f, Vector256.Create(ExpConstants.C4));
        p = Vector256.FusedMultiplyAdd(p, f, Vector256.Create(ExpConstants.C3));
        p = Vector256.FusedMultiplyAdd(p, f, Vector256.Create(ExpConstants.C2));
        p = Vector256.FusedMultiplyAdd(p, f, Vector256.Create(ExpConstants.C1));
        p = Vector256.FusedMultiplyAdd(p, f, Vector256<float>.One);
        var scale = Vector256.ShiftLeft(Vector256.ConvertToInt32Native(n) + Vector256.Create(127), 23).AsSingle();
        return Vector256.ConditionalSelect(Vector256.LessThan(t, Vector256.Create(ExpConstants.FlushBelow)), Vector256<float>.Zero, p * scale);
    }
}

/// <summary>128-bit vectors: SSE/NEON where accelerated, otherwise the runtime's software fallback.</summary>
internal readonly unsafe struct Simd128 : ISimdOps<Vector128<float>>
{
    public static int Width => Vector128<float>.Count;

    public static Vector128<float> Zero => Vector128<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Load(float* source) => Vector128.Load(source);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(float* destination, Vector128<float> value) => value.Store(destination);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Broadcast(float value) => Vector128.Create(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> MulAdd(Vector128<float> a, Vector128<float> b, Vector128<float> c) => Vector128.FusedMultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Add(Vector128<float> a, Vector128<float> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Subtract(Vector128<float> a, Vector128<float> b) => a - b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Multiply(Vector128<float> a, Vector128<float> b) => a * b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Max(Vector128<float> a, Vector128<float> b) => Vector128.Max(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector128<float> value) => Vector128.Sum(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float MaxAcross(Vector128<float> value) => MathF.Max(MathF.Max(value[0], value[1]), MathF.Max(value[2], value[3]));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> KeepLanes(Vector128<float> value, int lo, int hi, float fill)
    {
        var lane = Vector128<int>.Indices;
        var keep = Vector128.GreaterThanOrEqual(lane, Vector128.Create(lo)) & Vector128.LessThan(lane, Vector128.Create(hi));
        return Vector128.ConditionalSelect(keep.AsSingle(), value, Vector128.Create(fill));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Exp(Vector128<float> x)
    {
        var t = x * Vector128.Create(ExpConstants.Log2E);
        t = Vector128.ConditionalSelect(Vector128.GreaterThan(t, Vector128.Create(ExpConstants.Max)), Vector128.Create(ExpConstants.Max), t);
        var n = Vector128.Round(t);
        var f = t - n;
        var p = Vector128.FusedMultiplyAdd(Vector128.Create(ExpConstants.C7), f, Vector128.Create(ExpConstants.C6));
        p = Vector128.FusedMultiplyAdd(p, f, Vector128.Create(ExpConstants.C5));
        p = Vector128.FusedMultiplyAdd(p, f, Vector128.Create(ExpConstants.C4));
        p = Vector128.FusedMultiplyAdd(p, f, Vector128.Create(ExpConstants.C3));
        p = Vector128.FusedMultiplyAdd(p, f, Vector128.Create(ExpConstants.C2));
        p = Vector128.FusedMultiplyAdd(p, f, Vector128.Create(ExpConstants.C1));
        p = Vector128.FusedMultiplyAdd(p, f, Vector128<float>.One);
        var scale = Vector128.ShiftLeft(Vector128.ConvertToInt32Native(n) + Vector128.Create(127), 23).AsSingle();
        return Vector128.ConditionalSelect(Vector128.LessThan(t, Vector128.Create(ExpConstants.FlushBelow)), Vector128<float>.Zero, p * scale);
    }
}
