namespace Natten.Tests.Support;

/// <summary>
/// Tolerances in one place, in the style of FlashAttention's rule: a kernel's max error against the
/// double-precision Reference may be at most twice the max error of a plain implementation in the
/// same precision (<see cref="PlainAttention"/>), plus a floor per storage type.
/// </summary>
internal static class Tolerance
{
    /// <summary>Floor for float32 storage (inputs in [-1, 1): outputs and LSEs of order 1).</summary>
    public const double Float32Floor = 1e-6;

    /// <summary>Floor for float16 storage: half an ulp of half precision at 1 is 4.9e-4.</summary>
    public const double Float16Floor = 5e-4;

    /// <summary>Floor for bfloat16 storage: half an ulp of bfloat16 at 1 is 2^-9 ≈ 2e-3; the tensor-core path also rounds P to bf16.</summary>
    public const double BFloat16Floor = 4e-3;

    /// <summary>float32 storage when no plain baseline is computed: 2 × ~1e-7 + the floor.</summary>
    public const double Float32 = 2e-6;

    /// <summary>Gradients sum over up to ∏K·(H/Hkv) terms each way: an absolute bound for float32.</summary>
    public const double Float32Gradient = 1e-5;

    /// <summary>
    /// Gradients with float16 storage: P and dS rounded to half on the tensor-core path and the stored gradient's own
    /// rounding (2^-11 relative each) — four half-precision ulps at 1. Observed maxima on the test problems: 7.3e-4.
    /// </summary>
    public const double Float16Gradient = 2e-3;

    /// <summary>
    /// Gradients with bfloat16 storage: dominated by rounding the stored gradient (half a bf16 ulp at 1 is 2^-8 ≈ 3.9e-3);
    /// observed maxima on the test problems: 9.7e-4.
    /// </summary>
    public const double BFloat16Gradient = 4e-3;

    /// <summary>float16 output storage without a baseline: 2 × half an ulp at 1 + a floor.</summary>
    public const double Float16 = 1e-3;

    /// <summary>Asserts FlashAttention's rule: err(actual) ≤ 2 · err(plain) + floor, both measured against <paramref name="expected"/>.</summary>
    public static void AssertRule(double[] expected, float[] actual, float[] plain, double floor, string what)
    {
        var kernelError = TestData.MaxAbsDiff(expected, actual);
        var plainError = TestData.MaxAbsDiff(expected, plain);
        Assert.That(kernelError, Is.LessThanOrEqualTo((2 * plainError) + floor), $"{what}: kernel error {kernelError:e2}, plain error {plainError:e2}");
    }
}
