using Natten.Tests.Support;

namespace Natten.Tests.Cpu;

/// <summary>
/// Special values: a NaN in one input reaches exactly the outputs that depend on it (every other output
/// keeps the bits of a clean run), ±1e4 logits stay finite and correct, and the kernels never make a
/// NaN of their own.
/// </summary>
public sealed class CpuSpecialValueTests
{
    private static readonly CpuCase Problem = new("2D GQA", [9, 11], [3, 5]) { Heads = 4, KvHeads = 2, HeadDim = 8, ValueDim = 20, Stride = [1, 2] };

    [TestCase("query")]
    [TestCase("key")]
    [TestCase("value")]
    public void NaNInOneTokenReachesOnlyTheOutputsThatDependOnIt(string tensor)
    {
        var p = Problem;
        var clean = p.Inputs(seed: 21);
        var poisoned = p.Inputs(seed: 21);
        const int Token = 50;
        const int KvHead = 1;
        var row = (Token * p.KvHeads) + KvHead;
        switch (tensor)
        {
            case "query":
                poisoned.Query[(((Token * p.Heads) + 3) * p.HeadDim) + 2] = float.NaN; // query head 3
                break;
            case "key":
                poisoned.Key[(row * p.HeadDim) + 5] = float.NaN;
                break;
            default:
                poisoned.Value[(row * p.ValueDim) + 7] = float.NaN;
                break;
        }

        var (cleanOut, cleanLse) = p.Forward(clean);
        var (output, lse) = p.Forward(poisoned);
        var reference = p.Reference;
        var group = p.Heads / p.KvHeads;
        var affected = 0;
        for (var t = 0; t < p.Tokens; t++)
        {
            for (var h = 0; h < p.Heads; h++)
            {
                var dependsOn = tensor == "query"
                    ? t == Token && h == 3
                    : h / group == KvHead && reference.Allows(t, Token);
                var r = (t * p.Heads) + h;
                var o = output.AsSpan(r * p.ValueDim, p.ValueDim);
                if (dependsOn)
                {
                    affected++;
                    Assert.That(o.ToArray().Any(float.IsNaN), Is.True, $"token {t} head {h} depends on the NaN");
                    Assert.That(float.IsNaN(lse[r]), Is.EqualTo(tensor != "value"), $"LSE of token {t} head {h}");
                }
                else
                {
                    Assert.That(o.ToArray(), Is.EqualTo(cleanOut.AsSpan(r * p.ValueDim, p.ValueDim).ToArray()), $"token {t} head {h} is independent");
                    Assert.That(lse[r], Is.EqualTo(cleanLse[r]), $"LSE of token {t} head {h}");
                }
            }
        }

        Assert.That(affected, Is.GreaterThan(0));
    }

    [Test]
    public void NaNInOneValueReachesOnlyTheGradientsThatDependOnIt()
    {
        var p = Problem with { Heads = 2, KvHeads = 2 };
        var clean = p.Inputs(seed: 22);
        var poisoned = p.Inputs(seed: 22);
        const int Token = 40;
        poisoned.Value[(((Token * p.KvHeads) + 0) * p.ValueDim) + 3] = float.NaN;
        var (cleanOut, cleanLse) = p.Forward(clean);
        var cleanGrads = p.Backward(clean, cleanOut, cleanLse);
        var (output, lse) = p.Forward(poisoned);
        var grads = p.Backward(poisoned, output, lse);

        // dQ of a query row depends on V only through the keys it sees (dP = dO·v) and through Δ = dO·O.
        var reference = p.Reference;
        for (var t = 0; t < p.Tokens; t++)
        {
            var dependsOn = reference.Allows(t, Token);
            var r = t * p.Heads;
            var dq = grads.Query.AsSpan(r * p.HeadDim, p.HeadDim).ToArray();
            if (dependsOn)
            {
                Assert.That(dq.Any(float.IsNaN), Is.True, $"dQ of token {t}");
            }
            else
            {
                Assert.That(dq, Is.EqualTo(cleanGrads.Query.AsSpan(r * p.HeadDim, p.HeadDim).ToArray()), $"dQ of token {t}");
            }

            // Head 1 never reads the poisoned KV head 0.
            var other = (r + 1) * p.HeadDim;
            Assert.That(grads.Query.AsSpan(other, p.HeadDim).ToArray(), Is.EqualTo(cleanGrads.Query.AsSpan(other, p.HeadDim).ToArray()), $"dQ head 1 of token {t}");
        }

        Assert.That(grads.Key.Where((_, i) => i / p.HeadDim % p.KvHeads == 1), Is.EqualTo(cleanGrads.Key.Where((_, i) => i / p.HeadDim % p.KvHeads == 1)), "dK of the clean KV head");
    }

    [TestCase(1e4)]
    [TestCase(-1e4)]
    public void HugeLogitsStayFiniteAndCorrect(double logit)
    {
        // q·k = ±1e4 · (a pattern of ±1): scores spread over ±2e4, so exp(s - max) underflows for most keys.
        var p = new CpuCase("huge logits", [12, 10], [5, 3]) { Heads = 2, KvHeads = 2, HeadDim = 4, ValueDim = 4, Scale = 1, Additional = 2 };
        var x = p.Inputs(seed: 23);
        var rng = new Random(1);
        var magnitude = (float)Math.Sqrt(Math.Abs(logit) / 2);
        for (var i = 0; i < x.Query.Length; i++)
        {
            x.Query[i] = rng.Next(2) == 0 ? magnitude : -magnitude;
        }

        for (var i = 0; i < x.Key.Length; i++)
        {
            x.Key[i] = (logit > 0 ? 1 : -1) * (rng.Next(2) == 0 ? magnitude : -magnitude);
        }

        var (output, lse) = p.Forward(x);
        Assert.That(output.All(float.IsFinite) && lse.All(float.IsFinite), Is.True, "finite");
        var expected = p.ReferenceForward(x);
        Assert.That(TestData.MaxAbsDiff(expected.Output, output), Is.LessThanOrEqualTo(1e-5), "output");

        // |LSE| up to 2e4: a float ulp there is 2e-3.
        Assert.That(TestData.MaxAbsDiff(expected.LogSumExp, lse), Is.LessThanOrEqualTo(4e-3), "lse");

        var g = p.Backward(x, output, lse);
        Assert.That(g.Query.Concat(g.Key).Concat(g.Value).Concat(g.AdditionalKey).Concat(g.AdditionalValue).All(float.IsFinite), Is.True, "finite gradients");
    }

    [Test]
    public void LargeInputsNeverProduceNaN()
    {
        var p = new CpuCase("large inputs", [33], [9]) { Heads = 2, KvHeads = 1, HeadDim = 32, ValueDim = 32, Scale = 1, Additional = 3 };
        var x = p.Inputs(seed: 24);
        foreach (var tensor in new[] { x.Query, x.Key, x.AdditionalKey })
        {
            for (var i = 0; i < tensor.Length; i++)
            {
                tensor[i] *= 1e3f;
            }
        }

        var (output, lse) = p.Forward(x);
        Assert.That(output.All(float.IsFinite), Is.True, "output");
        Assert.That(lse.All(float.IsFinite), Is.True, "lse");
        var g = p.Backward(x, output, lse);
        Assert.That(g.Query.Concat(g.Key).Concat(g.Value).Concat(g.AdditionalKey).Concat(g.AdditionalValue).Any(float.IsNaN), Is.False, "gradients");
    }
}
