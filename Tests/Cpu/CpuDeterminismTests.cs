using Natten.Kernels.Cpu;

namespace Natten.Tests.Cpu;

/// <summary>
/// Every output element is written by one task in a fixed order: the same bits on every run, for any
/// thread count, and when several threads call the kernels at once on different inputs.
/// </summary>
public sealed class CpuDeterminismTests
{
    private static readonly CpuCase Problem = new("2D GQA + extra", [23, 19], [7, 5])
    {
        Heads = 4, KvHeads = 2, HeadDim = 24, ValueDim = 40, Additional = 3, Stride = [1, 2], Batch = 2,
    };

    [Test]
    public void TwoRunsGiveIdenticalBits()
    {
        var x = Problem.Inputs(seed: 31);
        var (o1, l1) = Problem.Forward(x);
        var (o2, l2) = Problem.Forward(x);
        Assert.That(o2, Is.EqualTo(o1));
        Assert.That(l2, Is.EqualTo(l1));
        AssertSame(Problem.Backward(x, o1, l1), Problem.Backward(x, o1, l1));
    }

    [Test]
    public void ThreadCountDoesNotChangeTheBits()
    {
        var x = Problem.Inputs(seed: 32);
        var (o1, l1) = Problem.Forward(x, new CpuOptions { MaxThreads = 1 });
        var g1 = Problem.Backward(x, o1, l1, new CpuOptions { MaxThreads = 1 });
        foreach (var threads in new[] { 2, 3, 8 })
        {
            var options = new CpuOptions { MaxThreads = threads };
            var (o, l) = Problem.Forward(x, options);
            Assert.That(o, Is.EqualTo(o1), $"{threads} threads");
            Assert.That(l, Is.EqualTo(l1), $"{threads} threads");
            AssertSame(g1, Problem.Backward(x, o1, l1, options));
        }
    }

    [Test]
    public void ConcurrentCallsMatchSequentialOnes()
    {
        const int Callers = 6;
        var inputs = Enumerable.Range(0, Callers).Select(i => Problem.Inputs(seed: 40 + i)).ToArray();
        var sequential = inputs.Select(x =>
        {
            var (o, l) = Problem.Forward(x);
            return (o, l, Problem.Backward(x, o, l));
        }).ToArray();

        var results = new (float[] O, float[] L, CpuGradients G)[Callers, 3];
        using var start = new Barrier(Callers);
        var threads = Enumerable.Range(0, Callers).Select(i => new Thread(() =>
        {
            start.SignalAndWait();
            for (var round = 0; round < 3; round++)
            {
                var (o, l) = Problem.Forward(inputs[i]);
                results[i, round] = (o, l, Problem.Backward(inputs[i], o, l));
            }
        })).ToArray();
        foreach (var thread in threads)
        {
            thread.Start();
        }

        foreach (var thread in threads)
        {
            thread.Join();
        }

        for (var i = 0; i < Callers; i++)
        {
            for (var round = 0; round < 3; round++)
            {
                Assert.That(results[i, round].O, Is.EqualTo(sequential[i].o), $"caller {i} round {round}");
                Assert.That(results[i, round].L, Is.EqualTo(sequential[i].l), $"caller {i} round {round}");
                AssertSame(sequential[i].Item3, results[i, round].G);
            }
        }
    }

    private static void AssertSame(CpuGradients expected, CpuGradients actual)
    {
        Assert.That(actual.Query, Is.EqualTo(expected.Query), "dQ");
        Assert.That(actual.Key, Is.EqualTo(expected.Key), "dK");
        Assert.That(actual.Value, Is.EqualTo(expected.Value), "dV");
        Assert.That(actual.AdditionalKey, Is.EqualTo(expected.AdditionalKey), "d(additional K)");
        Assert.That(actual.AdditionalValue, Is.EqualTo(expected.AdditionalValue), "d(additional V)");
    }
}
