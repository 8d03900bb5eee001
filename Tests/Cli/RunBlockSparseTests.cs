using Natten.Cli;
using Natten.Reference;

namespace Natten.Tests.Cli;

/// <summary><c>natten run --block-mask / --pattern</c> end to end through .npy files, against the Reference's dense-mask oracle.</summary>
public sealed class RunBlockSparseTests
{
    private const double Float32Tolerance = 1e-5;

    /// <summary>One run: the arrays' shapes, extra arguments, and the pattern as a predicate over (batch, head, query, key).</summary>
    public sealed record Case(
        string Name, int[] QueryShape, int[] KeyShape, int ValueDim, string[] Arguments, Func<int, int, int, int, bool> Allows,
        Action<string>? Files = null, bool Backward = false);

    private static IEnumerable<TestCaseData> Cases()
    {
        static bool Window(int q, int k, int left, int right) => k >= q - left && k <= q + right;
        var random = new Random(3);
        var crossMask = Enumerable.Range(0, 12 * 7).Select(_ => random.Next(3) == 0).ToArray();
        var headMask = Enumerable.Range(0, 2 * 10 * 10).Select(_ => random.Next(2) == 0).ToArray();
        int[] segments = [0, 0, 1, 1, 1, -1, 2, 2, 0, 0];

        Case[] cases =
        [
            new("bool_mask_cross", [1, 12, 2, 4], [1, 7, 1, 4], 3, ["--block-mask", "{dir}/mask.npy", "--block-size", "4x3"],
                (b, h, q, k) => crossMask[(q * 7) + k],
                dir => File.WriteAllBytes(Path.Combine(dir, "mask.npy"), NpyTests.Build(1, 0, Dict("|b1", [12, 7]), [.. crossMask.Select(x => (byte)(x ? 1 : 0))]))),
            new("float_mask_per_head", [2, 10, 2, 4], [2, 10, 2, 4], 4, ["--block-mask", "{dir}/mask.npy", "--block-size", "3"],
                (b, h, q, k) => headMask[(((h * 10) + q) * 10) + k],
                dir => Npy.Write(Path.Combine(dir, "mask.npy"), [2, 10, 10], [.. headMask.Select(x => x ? 1f : 0f)])),
            new("sliding_backward", [1, 11, 2, 3], [1, 11, 1, 3], 2, ["--pattern", "sliding:2,1", "--block-size", "4"],
                (b, h, q, k) => Window(q, k, 2, 1), Backward: true),
            new("causal", [1, 9, 1, 4], [1, 9, 1, 4], 4, ["--pattern", "causal", "--block-size", "2x3"], (b, h, q, k) => k <= q),
            new("halo_2d", [1, 4, 6, 2, 4], [1, 4, 6, 2, 4], 4, ["--pattern", "halo:2,1", "--block-size", "6"],
                (b, h, q, k) => Math.Abs((k / 6) - (q / 6 / 2 * 2) - 0.5) <= 1.5 && Math.Abs((k % 6) - (q % 6 / 2 * 2) - 0.5) <= 1.5),
            new("segments", [1, 10, 1, 4], [1, 10, 1, 4], 4, ["--pattern", "segments:{dir}/ids.npy", "--block-size", "4"],
                (b, h, q, k) => segments[q] >= 0 && segments[q] == segments[k],
                dir => File.WriteAllBytes(Path.Combine(dir, "ids.npy"), NpyTests.Build(1, 0, Dict("<i4", [10]), [.. segments.SelectMany(BitConverter.GetBytes)]))),
            new("documents", [1, 8, 1, 4], [1, 8, 1, 4], 4, ["--pattern", "documents:0,3,8", "--block-size", "2"], (b, h, q, k) => (q < 3) == (k < 3)),
            new("strided", [1, 12, 3, 4], [1, 12, 3, 4], 4, ["--pattern", "strided:1,2,1", "--block-size", "3"],
                (b, h, q, k) => k <= q && (h == 0 || q / 3 == k / 3 || (k / 3) % 2 == (h - 1) % 2)),
        ];
        return cases.Select(c => new TestCaseData(c).SetName($"RunBlockSparse_{c.Name}"));
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesTheReference(Case c)
    {
        using var dir = new TempDirectory();
        var rng = new Random(c.Name.Length);
        double[] Input(string name, int[] shape)
        {
            var values = Enumerable.Range(0, shape.Aggregate(1, (a, b) => a * b)).Select(_ => (rng.NextSingle() * 2) - 1).ToArray();
            Npy.Write(dir.File(name), shape, values);
            return [.. values.Select(v => (double)v)];
        }

        int[] valueShape = [.. c.KeyShape[..^1], c.ValueDim];
        var q = Input("q.npy", c.QueryShape);
        var k = Input("k.npy", c.KeyShape);
        var v = Input("v.npy", valueShape);
        int[] outputShape = [.. c.QueryShape[..^1], c.ValueDim];
        var outputGrad = c.Backward ? Input("do.npy", outputShape) : [];
        c.Files?.Invoke(dir.Path);
        var args = new List<string>
        {
            "run", "--query", dir.File("q.npy"), "--key", dir.File("k.npy"), "--value", dir.File("v.npy"),
            "--output", dir.File("o.npy"), "--lse", dir.File("lse.npy"),
        };
        args.AddRange(c.Arguments.Select(a => a.Replace("{dir}", dir.Path, StringComparison.Ordinal)));
        if (c.Backward)
        {
            args.AddRange(["--backward", "--grad-output", dir.File("do.npy"), "--grad-query", dir.File("dq.npy"), "--grad-key", dir.File("dk.npy"), "--grad-value", dir.File("dv.npy")]);
        }

        CliRunner.Run([.. args]).AssertSuccess();

        var dims = new MaskedAttentionDims(
            c.QueryShape[0], c.QueryShape[1..^2].Aggregate(1, (a, b) => a * b), c.KeyShape[1..^2].Aggregate(1, (a, b) => a * b),
            c.QueryShape[^2], c.KeyShape[^2], c.QueryShape[^1], c.ValueDim, 1 / Math.Sqrt(c.QueryShape[^1]));
        var expected = ReferenceAttention.DenseMasked(dims, q, k, v, c.Allows);
        var output = Npy.Read(dir.File("o.npy"));
        var lse = Npy.Read(dir.File("lse.npy"));
        Assert.That(output.Shape, Is.EqualTo(outputShape));
        Assert.That(lse.Shape, Is.EqualTo(c.QueryShape[..^1]));
        Assert.That(MaxAbsDiff(output.Float32Data!, expected.Output), Is.LessThanOrEqualTo(Float32Tolerance), "output");
        Assert.That(MaxAbsDiff(lse.Float32Data!, expected.LogSumExp), Is.LessThanOrEqualTo(Float32Tolerance), "lse");
        if (c.Backward)
        {
            var grads = ReferenceAttention.DenseMaskedBackward(dims, q, k, v, outputGrad, c.Allows);
            Assert.That(MaxAbsDiff(Npy.Read(dir.File("dq.npy")).Float32Data!, grads.Query), Is.LessThanOrEqualTo(Float32Tolerance), "dQ");
            Assert.That(MaxAbsDiff(Npy.Read(dir.File("dk.npy")).Float32Data!, grads.Key), Is.LessThanOrEqualTo(Float32Tolerance), "dK");
            Assert.That(MaxAbsDiff(Npy.Read(dir.File("dv.npy")).Float32Data!, grads.Value), Is.LessThanOrEqualTo(Float32Tolerance), "dV");
        }
    }

    private static IEnumerable<TestCaseData> Errors()
    {
        string[] Base(params string[] extra)
            => ["run", "--query", "{dir}/q.npy", "--key", "{dir}/k.npy", "--value", "{dir}/v.npy", "--output", "{dir}/o.npy", .. extra];
        TestCaseData Case(string name, int code, string contains, string[] args) => new TestCaseData(args, code, contains).SetName($"RunBlockSparseError_{name}");

        yield return Case("MaskAndPattern", 2, "either --block-mask or --pattern", Base("--block-mask", "{dir}/mask.npy", "--pattern", "causal"));
        yield return Case("KernelSizeWithPattern", 2, "--kernel-size does not apply", Base("--pattern", "causal", "--kernel-size", "3"));
        yield return Case("UnknownPattern", 2, "is not one of", Base("--pattern", "diagonal"));
        yield return Case("SlidingArguments", 2, "takes 2 comma-separated integers", Base("--pattern", "sliding:3"));
        yield return Case("MaskShape", 2, "expected [Nq=8, Nk=8]", Base("--block-mask", "{dir}/wrong.npy"));
        yield return Case("MaskValue", 1, "a mask holds 0 or 1", Base("--block-mask", "{dir}/two.npy"));
        yield return Case("MaskDtype", 1, "dtype '<f8' is not supported", Base("--block-mask", "{dir}/f8.npy"));
        yield return Case("ZeroBlockSize", 2, "queryBlockSize is 0", Base("--pattern", "causal", "--block-size", "0"));
        yield return Case("WindowSide", 2, "left is -3", Base("--pattern", "sliding:-3,1"));
        yield return Case("Backend", 2, "not a block-sparse backend", Base("--pattern", "causal", "--backend", "cpu"));
    }

    [TestCaseSource(nameof(Errors))]
    public void ErrorsAreOneLine(string[] args, int code, string contains)
    {
        using var dir = new TempDirectory();
        var values = new float[8 * 2 * 4];
        foreach (var name in new[] { "q.npy", "k.npy", "v.npy" })
        {
            Npy.Write(dir.File(name), [1, 8, 2, 4], values);
        }

        Npy.Write(dir.File("wrong.npy"), [8, 7], new float[56]);
        Npy.Write(dir.File("two.npy"), [8, 8], Enumerable.Repeat(2f, 64).ToArray());
        File.WriteAllBytes(dir.File("f8.npy"), NpyTests.Build(1, 0, Dict("<f8", [8, 8]), new byte[512]));
        File.WriteAllBytes(dir.File("mask.npy"), NpyTests.Build(1, 0, Dict("|b1", [8, 8]), new byte[64]));
        var result = CliRunner.Run([.. args.Select(a => a.Replace("{dir}", dir.Path, StringComparison.Ordinal))]);
        result.AssertOneLineError(code, contains);
    }

    private static string Dict(string descr, int[] shape)
        => $"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({string.Join(", ", shape)}{(shape.Length == 1 ? "," : string.Empty)}), }}";

    private static double MaxAbsDiff(float[] actual, double[] expected)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length));
        var max = 0.0;
        for (var i = 0; i < actual.Length; i++)
        {
            max = double.IsNegativeInfinity(expected[i]) && float.IsNegativeInfinity(actual[i]) ? max : Math.Max(max, Math.Abs(actual[i] - expected[i]));
            if (double.IsNaN(actual[i]))
            {
                return double.PositiveInfinity;
            }
        }

        return max;
    }
}
