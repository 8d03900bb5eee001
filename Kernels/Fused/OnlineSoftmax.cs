using ILGPU;
using ILGPU.Algorithms;

namespace Natten.Kernels.Fused;

/// <summary>
/// One query's running softmax in the log2 domain (scores pre-multiplied by scale·log2 e, so each
/// exponential is a single exp2): the running max <see cref="Max"/>, the running sum
/// <see cref="Sum"/>, and the unnormalised output row kept in shared memory by the caller.
/// </summary>
internal struct OnlineSoftmax
{
    public float Max;
    public float Sum;

    public static OnlineSoftmax Empty => new() { Max = float.NegativeInfinity, Sum = 0f };

    /// <summary>
    /// Adds one key with log2-domain score <paramref name="score"/> and value row <paramref name="value"/>
    /// to the output row <paramref name="output"/>: rescale when the max grows, then accumulate.
    /// </summary>
    public void Add(float score, ArrayView<float> value, ArrayView<float> output, int length)
    {
        if (score > Max)
        {
            // exp2(-inf) = 0 clears the (empty) accumulator on the first key.
            var correction = XMath.Exp2(Max - score);
            Sum *= correction;
            for (var c = 0; c < length; c++)
            {
                output[c] *= correction;
            }

            Max = score;
        }

        // A NaN score fails the comparison above, then turns p, the sum and the row into NaN: the
        // query's output becomes NaN, as it should, and no other query is touched.
        var p = XMath.Exp2(score - Max);
        Sum += p;
        for (var c = 0; c < length; c++)
        {
            output[c] += p * value[c];
        }
    }

    /// <summary>Natural-log LSE: (max + log2 sum) · ln 2; −∞ when no key was seen.</summary>
    public readonly float LogSumExp => Sum == 0f ? float.NegativeInfinity : (Max + XMath.Log2(Sum)) * 0.6931471805599453f;
}
