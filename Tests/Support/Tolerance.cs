namespace Natten.Tests.Support;

/// <summary>
/// Absolute tolerances per storage type, in one place. FlashAttention's rule: a kernel's error
/// against the double-precision Reference may be at most 2× the error of a plain implementation in
/// the same precision, plus a floor. With inputs in [-1, 1) and outputs that are convex
/// combinations of values, a plain float32 implementation errs by a few 1e-7; half storage rounds
/// the output once (relative 2^-11 ≈ 4.9e-4 on values below 1).
/// </summary>
internal static class Tolerance
{
    /// <summary>float32 storage and math: 2 × ~1e-7 + floor 1e-6.</summary>
    public const double Float32 = 2e-6;

    /// <summary>float32 gradients sum over up to K·(H/Hkv) terms: a larger floor.</summary>
    public const double Float32Gradient = 1e-5;

    /// <summary>float16 output storage: 2 × half an ulp at 1 (4.9e-4) + floor 1e-5.</summary>
    public const double Float16 = 1e-3;
}
