using Natten.Reference;
using Natten.Tests.Support;

namespace Natten.Tests.BlockSparse;

/// <summary>Checks a built <see cref="BlockMask"/> against a pattern's own definition, pair by pair and through the kernels.</summary>
internal static class BuilderCheck
{
    /// <summary>Every (batch, head, query, key) pair: the mask allows it iff the definition does.</summary>
    public static void SamePairs(BlockMask mask, int batches, int heads, Func<int, int, int, int, bool> definition, string what)
    {
        for (var b = 0; b < batches; b++)
        {
            for (var h = 0; h < heads; h++)
            {
                for (var q = 0; q < mask.QueryTokens; q++)
                {
                    for (var k = 0; k < mask.KeyTokens; k++)
                    {
                        if (mask.Allows(b, h, q, k) != definition(b, h, q, k))
                        {
                            Assert.Fail($"{what}: batch {b} head {h} query {q} key {k}: mask says {mask.Allows(b, h, q, k)}, the definition {definition(b, h, q, k)}");
                        }
                    }
                }
            }
        }

        AssertListsAreTight(mask, batches, heads, definition, what);
    }

    /// <summary>
    /// Listed blocks hold at least one allowed pair and full blocks only allowed pairs: the builder
    /// skips what it can (the kernels' speed depends on it), and never marks a mixed block full.
    /// </summary>
    public static void AssertListsAreTight(BlockMask mask, int batches, int heads, Func<int, int, int, int, bool> definition, string what)
    {
        for (var b = 0; b < batches; b++)
        {
            for (var h = 0; h < heads; h++)
            {
                for (var qb = 0; qb < mask.QueryBlocks; qb++)
                {
                    var (q0, q1) = (qb * mask.QueryBlockSize, Math.Min((qb + 1) * mask.QueryBlockSize, mask.QueryTokens));
                    foreach (var block in mask.GetKeyBlocks(b, h, qb))
                    {
                        var (k0, k1) = (block.Index * mask.KeyBlockSize, Math.Min((block.Index + 1) * mask.KeyBlockSize, mask.KeyTokens));
                        var pairs = Enumerable.Range(q0, q1 - q0).SelectMany(q => Enumerable.Range(k0, k1 - k0).Select(k => definition(b, h, q, k))).ToArray();
                        Assert.That(pairs, Has.Some.True, $"{what}: block ({qb}, {block.Index}) of batch {b} head {h} is listed but allows nothing");
                        if (block.Kind == BlockKind.Full)
                        {
                            Assert.That(pairs, Has.All.True, $"{what}: block ({qb}, {block.Index}) of batch {b} head {h} is full but masks a pair");
                        }
                    }
                }
            }
        }
    }

    /// <summary>The fused forward and backward under <paramref name="mask"/> against the Reference under the definition.</summary>
    public static void KernelsMatch(BlockMask mask, BlockSparseShape shape, Func<int, int, int, int, bool> definition, int seed, bool backward = true)
    {
        var c = MaskedCase.Create(new Random(seed), shape);
        var options = new BlockSparseOptions { Backend = "fused" };
        var output = new float[c.OutputLength];
        var lse = new float[c.LseLength];
        BlockSparseAttention.Forward(c.Query, c.Key, c.Value, mask, shape, options, output, lse);
        var (q, k, v) = (TestData.ToDouble(c.Query), TestData.ToDouble(c.Key), TestData.ToDouble(c.Value));
        var expected = ReferenceAttention.DenseMasked(c.Dims(), q, k, v, definition);
        var plain = PlainMaskedAttention.Forward(c.Dims(), c.Query, c.Key, c.Value, definition);
        MaskedAssert.Rule(expected.Output, output, plain.Output, Tolerance.Float32Floor, "output");
        MaskedAssert.Rule(expected.LogSumExp, lse, plain.Lse, Tolerance.Float32Floor, "lse");
        if (!backward)
        {
            return;
        }

        var outputGrad = TestData.Floats(new Random(seed + 1), c.OutputLength);
        var (dq, dk, dv) = (new float[c.Query.Length], new float[c.Key.Length], new float[c.Value.Length]);
        BlockSparseAttention.Backward(c.Query, c.Key, c.Value, output, lse, outputGrad, mask, shape, options, dq, dk, dv);
        var grads = ReferenceAttention.DenseMaskedBackward(c.Dims(), q, k, v, TestData.ToDouble(outputGrad), definition);
        MaskedAssert.Within(grads.Query, dq, Tolerance.Float32Gradient, "dQ");
        MaskedAssert.Within(grads.Key, dk, Tolerance.Float32Gradient, "dK");
        MaskedAssert.Within(grads.Value, dv, Tolerance.Float32Gradient, "dV");
    }
}
