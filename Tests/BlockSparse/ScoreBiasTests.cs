using Natten.Reference;
using Natten.Tests.Support;

namespace Natten.Tests.BlockSparse;

/// <summary>Additive score biases: the general dense per-head hook and NATTEN's relative positional bias on the NA pattern.</summary>
public sealed class ScoreBiasTests
{
    [Test]
    public void DenseBiasPerHeadMatchesTheReference()
    {
        const int nq = 14, nk = 17, heads = 2;
        var rng = new Random(12);
        var values = TestData.Floats(rng, heads * nq * nk).Select(x => 3 * x).ToArray();
        using var bias = ScoreBias.Dense(values, nq, nk, heads);
        using var mask = BlockMasks.SlidingWindow(nq, nk, 4, 2, 4, 5);
        var shape = new BlockSparseShape(2, nq, nk, heads, 5) { KvHeads = 1, ValueDim = 3 };
        bool Allows(int b, int h, int q, int k) => k >= q + nk - nq - 4 && k <= q + nk - nq + 2;
        double Bias(int b, int h, int q, int k) => values[(((h * nq) + q) * nk) + k];
        Check(mask, shape, new BlockSparseOptions { Bias = bias, Backend = "fused" }, Allows, Bias, seed: 3);
    }

    [TestCase(new[] { 7, 6 }, new[] { 3, 5 }, new[] { 1, 1 }, new[] { 1, 1 })]
    [TestCase(new[] { 11 }, new[] { 5 }, new[] { 2 }, new[] { 2 })]
    [TestCase(new[] { 4, 3, 5 }, new[] { 3, 3, 3 }, new[] { 1, 1, 1 }, new[] { 1, 1, 1 })]
    public void RelativePositionBiasOnTheNeighborhoodPatternFollowsNatten(int[] extents, int[] kernel, int[] stride, int[] dilation)
    {
        const int heads = 2;
        var rank = extents.Length;
        var axes = AxisValues.PerAxis(extents);
        var options = new NeighborhoodAttentionOptions(AxisValues.PerAxis(kernel)) { Stride = AxisValues.PerAxis(stride), Dilation = AxisValues.PerAxis(dilation) };
        var problem = new NeighborhoodProblem
        {
            Batch = 1, Spatial = extents, Heads = heads, KvHeads = heads, HeadDim = 4, ValueDim = 4,
            KernelSize = kernel, Stride = stride, Dilation = dilation, Causal = new bool[rank],
        };
        var tokens = problem.Tokens;
        using var mask = BlockMasks.Neighborhood(axes, options, 8, 6);
        bool Allows(int b, int h, int q, int k) => problem.Allows(q, k);
        BuilderCheck.SamePairs(mask, 1, 1, Allows, "neighborhood");

        // NATTEN's RPB: table [heads, 2K−1 per axis], read at (j − i) / d + K − 1 on each axis.
        var widths = kernel.Select(k => (2 * k) - 1).ToArray();
        var table = TestData.Floats(new Random(5), heads * widths.Aggregate(1, (a, b) => a * b));
        double Bias(int b, int h, int q, int k)
        {
            var (qc, kc) = (problem.Coordinates(q), problem.Coordinates(k));
            var index = h;
            for (var a = 0; a < rank; a++)
            {
                index = (index * widths[a]) + ((kc[a] - qc[a]) / dilation[a]) + kernel[a] - 1;
            }

            return table[index];
        }

        using var bias = ScoreBias.RelativePosition(table, heads, axes, AxisValues.PerAxis(kernel), AxisValues.PerAxis(dilation));
        var shape = new BlockSparseShape(1, tokens, tokens, heads, 4);
        Check(mask, shape, new BlockSparseOptions { Bias = bias }, Allows, Bias, seed: tokens);
    }

    [Test]
    public void RelativePositionBiasGivesNothingBeyondItsReach()
    {
        // Full attention over 12 tokens with a K = 3 table: only |j − i| ≤ 2 is biased.
        const int n = 12, heads = 2;
        var table = TestData.Floats(new Random(9), heads * 5);
        using var bias = ScoreBias.RelativePosition(table, heads, n, 3);
        using var mask = BlockMask.FromBlocks(Enumerable.Repeat(true, 9).ToArray(), n, n, 4, 4);
        double Bias(int b, int h, int q, int k) => Math.Abs(k - q) <= 2 ? table[(h * 5) + k - q + 2] : 0.0;
        Check(mask, new BlockSparseShape(1, n, n, heads, 4), new BlockSparseOptions { Bias = bias }, (_, _, _, _) => true, Bias, seed: 10);
    }

    private static void Check(
        BlockMask mask, BlockSparseShape shape, BlockSparseOptions options, Func<int, int, int, int, bool> allows, Func<int, int, int, int, double> bias, int seed)
    {
        var c = MaskedCase.Create(new Random(seed), shape);
        var output = new float[c.OutputLength];
        var lse = new float[c.LseLength];
        BlockSparseAttention.Forward(c.Query, c.Key, c.Value, mask, shape, options, output, lse);
        var (q, k, v) = (TestData.ToDouble(c.Query), TestData.ToDouble(c.Key), TestData.ToDouble(c.Value));
        var expected = ReferenceAttention.DenseMasked(c.Dims(), q, k, v, allows, bias);
        var plain = PlainMaskedAttention.Forward(c.Dims(), c.Query, c.Key, c.Value, allows, bias);
        MaskedAssert.Rule(expected.Output, output, plain.Output, Tolerance.Float32Floor, "output");
        MaskedAssert.Rule(expected.LogSumExp, lse, plain.Lse, Tolerance.Float32Floor, "lse");

        var outputGrad = TestData.Floats(new Random(seed + 1), c.OutputLength);
        var (dq, dk, dv) = (new float[c.Query.Length], new float[c.Key.Length], new float[c.Value.Length]);
        BlockSparseAttention.Backward(c.Query, c.Key, c.Value, output, lse, outputGrad, mask, shape, options, dq, dk, dv);
        var grads = ReferenceAttention.DenseMaskedBackward(c.Dims(), q, k, v, TestData.ToDouble(outputGrad), allows, bias);
        MaskedAssert.Within(grads.Query, dq, Tolerance.Float32Gradient, "dQ");
        MaskedAssert.Within(grads.Key, dk, Tolerance.Float32Gradient, "dK");
        MaskedAssert.Within(grads.Value, dv, Tolerance.Float32Gradient, "dV");
    }
}
