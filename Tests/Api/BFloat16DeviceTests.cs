using Natten.Reference;
using Natten.Tests.Support;

namespace Natten.Tests.Api;

/// <summary>
/// bfloat16 on device tensors (<c>NeighborhoodAttention.ForwardBFloat16/BackwardBFloat16</c> with
/// <see cref="DeviceTensor{T}"/> of bf16 bits) for the ILGPU backends, per accelerator kind: against the
/// Reference (FlashAttention's rule), and bit-identical to the host-span bf16 entry point of the same backend.
/// </summary>
[TestFixtureSource(nameof(Accelerators))]
public sealed class BFloat16DeviceTests(AcceleratorKind kind)
{
    public static IEnumerable<AcceleratorKind> Accelerators => [AcceleratorKind.Cpu, AcceleratorKind.Cuda];

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var backend in new[] { "fused", "naive" })
        {
            // D = 16 takes the fused backend's tensor-core path; D = 12 its float32-math kernel on bf16 storage.
            yield return new TestCaseData(backend, 16, 1).SetName($"{{m}}({backend}, D16, additional)");
            yield return new TestCaseData(backend, 12, 0).SetName($"{{m}}({backend}, D12)");
        }
    }

    [SetUp]
    public void RequireDevice()
    {
        if (!AttentionDevice.IsAvailable(kind))
        {
            Assert.Ignore($"No {kind} accelerator on this machine.");
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void ForwardAndBackwardOnDeviceTensors(string backend, int headDim, int additional)
    {
        var reference = new NeighborhoodProblem
        {
            Batch = 1, Spatial = [7, 9], Heads = 2, KvHeads = 1, HeadDim = headDim, ValueDim = 16, KernelSize = [3, 5],
            Stride = [1, 2], Dilation = [2, 1], Causal = [false, true], AdditionalTokens = additional,
        };
        var shape = new AttentionShape(1, (7, 9), 2, headDim) { KvHeads = 1, ValueDim = 16, AdditionalTokens = additional };
        var options = new NeighborhoodAttentionOptions((3, 5)) { Stride = (1, 2), Dilation = (2, 1), Causal = (false, true), Backend = backend };
        var rng = new Random(headDim + additional);
        ushort[] Bits(long n) => TestData.Floats(rng, n).Select(BFloat16Conversions.FromSingle).ToArray();
        float[] Values(ushort[] bits) => bits.Select(BFloat16Conversions.ToSingle).ToArray();
        var (q, k, v, dO) = (Bits(63 * 2 * headDim), Bits(63 * headDim), Bits(63 * 16), Bits(63 * 2 * 16));
        var (ak, av) = (Bits(additional * headDim), Bits(additional * 16));

        var device = AttentionDevice.Get(kind);
        using var tq = device.Upload<ushort>(q, q.Length);
        using var tk = device.Upload<ushort>(k, k.Length);
        using var tv = device.Upload<ushort>(v, v.Length);
        using var tak = device.Upload<ushort>(ak, ak.Length);
        using var tav = device.Upload<ushort>(av, av.Length);
        using var tdO = device.Upload<ushort>(dO, dO.Length);
        using var to = device.Allocate<ushort>(63 * 2 * 16);
        using var tlse = device.Allocate<float>(63 * 2);
        using var tdq = device.Allocate<ushort>(q.Length);
        using var tdk = device.Allocate<ushort>(k.Length);
        using var tdv = device.Allocate<ushort>(v.Length);
        using var tdak = device.Allocate<ushort>(ak.Length);
        using var tdav = device.Allocate<ushort>(av.Length);
        if (additional > 0)
        {
            NeighborhoodAttention.ForwardBFloat16(tq, tk, tv, tak, tav, shape, options, to, tlse);
            NeighborhoodAttention.BackwardBFloat16(tq, tk, tv, to, tlse, tdO, shape, options, tdq, tdk, tdv, tak, tav, tdak, tdav);
        }
        else
        {
            NeighborhoodAttention.ForwardBFloat16(tq, tk, tv, shape, options, to, tlse);
            NeighborhoodAttention.BackwardBFloat16(tq, tk, tv, to, tlse, tdO, shape, options, tdq, tdk, tdv);
        }

        device.Synchronize();
        var (output, lse) = (to.ToArray(), tlse.ToArray());

        double[] Wide(ushort[] bits) => bits.Select(b => (double)BFloat16Conversions.ToSingle(b)).ToArray();
        var expected = ReferenceAttention.Neighborhood(reference, Wide(q), Wide(k), Wide(v), Wide(ak), Wide(av));
        var plain = PlainAttention.Forward(reference, Values(q), Values(k), Values(v), Values(ak), Values(av));
        var plainRounded = plain.Output.Select(x => BFloat16Conversions.ToSingle(BFloat16Conversions.FromSingle(x))).ToArray();
        Tolerance.AssertRule(expected.Output, Values(output), plainRounded, Tolerance.BFloat16Floor, "output");
        Tolerance.AssertRule(expected.LogSumExp, lse, plain.Lse, Tolerance.Float32Floor, "lse");

        var grads = ReferenceAttention.NeighborhoodBackward(reference, Wide(q), Wide(k), Wide(v), Wide(dO), Wide(ak), Wide(av));
        using (Assert.EnterMultipleScope())
        {
            Assert.That(TestData.MaxAbsDiff(grads.Query, Values(tdq.ToArray())), Is.LessThanOrEqualTo(Tolerance.BFloat16Gradient), "dQ");
            Assert.That(TestData.MaxAbsDiff(grads.Key, Values(tdk.ToArray())), Is.LessThanOrEqualTo(Tolerance.BFloat16Gradient), "dK");
            Assert.That(TestData.MaxAbsDiff(grads.Value, Values(tdv.ToArray())), Is.LessThanOrEqualTo(Tolerance.BFloat16Gradient), "dV");
            if (additional > 0)
            {
                Assert.That(TestData.MaxAbsDiff(grads.AdditionalKey, Values(tdak.ToArray())), Is.LessThanOrEqualTo(Tolerance.BFloat16Gradient), "d(additional K)");
                Assert.That(TestData.MaxAbsDiff(grads.AdditionalValue, Values(tdav.ToArray())), Is.LessThanOrEqualTo(Tolerance.BFloat16Gradient), "d(additional V)");
            }
        }

        if (kind == AcceleratorKind.Cpu && AttentionDevice.Default.Kind == AcceleratorKind.Cpu)
        {
            // The host-span entry point runs the same backend on the default accelerator: identical bits.
            var hostOutput = new ushort[output.Length];
            var hostLse = new float[lse.Length];
            NeighborhoodAttention.ForwardBFloat16(q, k, v, ak, av, shape, options, hostOutput, hostLse);
            Assert.That(hostOutput, Is.EqualTo(output), "host and device bf16 outputs");
            Assert.That(hostLse, Is.EqualTo(lse), "host and device LSE");
        }
    }

    [Test]
    public void DeviceValidationNamesTheTensor()
    {
        var shape = new AttentionShape(1, 8, 1, 16);
        var options = new NeighborhoodAttentionOptions(3) { Backend = "fused" };
        var device = AttentionDevice.Get(kind);
        using var q = device.Allocate<ushort>(8 * 16);
        using var shortKey = device.Allocate<ushort>(7 * 16);
        using var output = device.Allocate<ushort>(8 * 16);
        var ex = Assert.Throws<ArgumentException>(() => NeighborhoodAttention.ForwardBFloat16(q, shortKey, q, shape, options, output));
        Assert.That(ex!.Message, Does.Contain("key"));
    }
}
