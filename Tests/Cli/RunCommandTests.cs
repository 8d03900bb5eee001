using System.Globalization;
using Natten.Cli;

namespace Natten.Tests.Cli;

/// <summary>
/// <c>natten run</c> end to end through .npy files, checked against <see cref="BruteForceAttention"/>
/// (written here, independent of Reference/ and Bindings).
/// </summary>
[TestFixture]
public sealed class RunCommandTests
{
    /// <summary>The issue's bar: every backend's float32 result within 1e-5 of an independent brute force.</summary>
    private const double Float32Tolerance = 1e-5;

    /// <summary>One problem for <c>natten run</c>; null options are left off the command line.</summary>
    public sealed record RunCase(
        string Name, int Batch, int[] Spatial, int Heads, int KvHeads, int HeadDim, int ValueDim, string Kernel,
        string? Stride = null, string? Dilation = null, string? Causal = null, int AdditionalTokens = 0,
        bool Lse = false, bool Float16 = false, bool MixedFloat16 = false, double? Scale = null);

    private static readonly RunCase[] _cases =
    [
        new("1D", 2, [13], 2, 2, 4, 3, "5", Stride: "2", Dilation: "2"),
        new("1D_causal_even_kernel", 1, [11], 2, 1, 4, 4, "4", Stride: "3", Causal: "1", Lse: true),
        new("1D_full_self_attention", 1, [9], 1, 1, 3, 3, "9", Lse: true),
        new("2D_classic", 1, [6, 7], 2, 2, 8, 8, "3"),
        new("2D_stride_dilation_causal", 2, [7, 9], 3, 3, 5, 5, "3x4", Stride: "1x2", Dilation: "2x1", Causal: "0x1", Lse: true),
        new("2D_blocked", 1, [8, 8], 2, 2, 4, 4, "4", Stride: "4", Lse: true),
        new("3D", 1, [4, 5, 6], 2, 2, 4, 2, "2x3x3", Stride: "2x1x3", Dilation: "1x1x2", Causal: "1x0x0", Lse: true),
        new("2D_additional_kv", 2, [5, 6], 2, 2, 4, 3, "3x2", Causal: "1x0", AdditionalTokens: 3, Lse: true),
        new("2D_gqa", 1, [6, 5], 4, 2, 4, 4, "3", Dilation: "2x1", Lse: true),
        new("1D_mqa_additional_kv_scale", 2, [10], 3, 1, 6, 2, "4", Stride: "2", AdditionalTokens: 2, Lse: true, Scale: 0.3),
        new("2D_float16", 1, [6, 6], 2, 1, 8, 8, "3", Stride: "1x2", Lse: true, Float16: true),
        new("3D_float16_additional_kv", 1, [3, 4, 5], 2, 2, 4, 4, "2x2x3", Causal: "0x0x1", AdditionalTokens: 2, Lse: true, Float16: true),
        new("2D_mixed_float16_float32", 1, [5, 7], 2, 2, 4, 4, "3x5", Lse: true, MixedFloat16: true),
    ];

    /// <summary>Every case on every backend by name, and once with the automatic choice ("auto").</summary>
    private static IEnumerable<TestCaseData> Cases()
    {
        foreach (var backend in AttentionBackends.Names.Prepend("auto"))
        {
            foreach (var c in _cases)
            {
                foreach (var seed in new[] { 1, 2, 3 })
                {
                    yield return new TestCaseData(c, seed, backend).SetName($"Run_{c.Name}_{backend}_seed{seed}");
                }
            }
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesBruteForce(RunCase c, int seed, string backend)
    {
        if (backend != "auto")
        {
            var shape = new AttentionShape(c.Batch, AxisValues.PerAxis(c.Spatial), c.Heads, c.HeadDim)
            {
                KvHeads = c.KvHeads,
                ValueDim = c.ValueDim,
                AdditionalTokens = c.AdditionalTokens,
            };
            var elementType = c.Float16 ? ElementType.Float16 : ElementType.Float32;
            if (!AttentionBackends.CanRun(backend, shape, new NeighborhoodAttentionOptions(2), elementType, backward: false, out var reason))
            {
                Assert.Ignore($"{backend} cannot run here: {reason}");
            }
        }

        using var dir = new TempDirectory();
        var rng = new Random(seed);
        var tokens = c.Spatial.Aggregate(1, (a, b) => a * b);
        int[] qShape = [c.Batch, .. c.Spatial, c.Heads, c.HeadDim];
        int[] kShape = [c.Batch, .. c.Spatial, c.KvHeads, c.HeadDim];
        int[] vShape = [c.Batch, .. c.Spatial, c.KvHeads, c.ValueDim];
        int[] akShape = [c.Batch, c.AdditionalTokens, c.KvHeads, c.HeadDim];
        int[] avShape = [c.Batch, c.AdditionalTokens, c.KvHeads, c.ValueDim];

        // Random inputs, rounded to half precision first when a file is float16, so the oracle sees
        // exactly the values the tool reads.
        double[] Input(string name, int[] shape, bool half)
        {
            var count = shape.Aggregate(1, (a, b) => a * b);
            var values = Enumerable.Range(0, count).Select(_ => (rng.NextSingle() * 2) - 1).ToArray();
            if (half)
            {
                var halves = values.Select(v => (Half)v).ToArray();
                Npy.Write(dir.File(name), shape, halves);
                return [.. halves.Select(h => (double)h)];
            }

            Npy.Write(dir.File(name), shape, values);
            return [.. values.Select(v => (double)v)];
        }

        var q = Input("q.npy", qShape, c.Float16 || c.MixedFloat16);
        var k = Input("k.npy", kShape, c.Float16);
        var v = Input("v.npy", vShape, c.Float16 || c.MixedFloat16);
        var args = new List<string>
        {
            "run", "--query", dir.File("q.npy"), "--key", dir.File("k.npy"), "--value", dir.File("v.npy"),
            "--output", dir.File("o.npy"), "--kernel-size", c.Kernel,
        };
        double[] ak = [], av = [];
        if (c.AdditionalTokens > 0)
        {
            ak = Input("ak.npy", akShape, c.Float16);
            av = Input("av.npy", avShape, c.Float16);
            args.AddRange(["--additional-key", dir.File("ak.npy"), "--additional-value", dir.File("av.npy")]);
        }

        void Optional(string name, string? value)
        {
            if (value is not null)
            {
                args.AddRange([name, value]);
            }
        }

        Optional("--stride", c.Stride);
        Optional("--dilation", c.Dilation);
        Optional("--causal", c.Causal);
        Optional("--scale", c.Scale?.ToString("R", CultureInfo.InvariantCulture));
        Optional("--lse", c.Lse ? dir.File("lse.npy") : null);
        Optional("--backend", backend == "auto" ? null : backend);

        var result = CliRunner.Run([.. args]);
        result.AssertSuccess();

        var problem = new BruteForceAttention.Problem(
            c.Batch, c.Spatial, c.Heads, c.KvHeads, c.HeadDim, c.ValueDim, c.AdditionalTokens,
            PerAxis(c.Kernel, c.Spatial.Length), PerAxis(c.Stride ?? "1", c.Spatial.Length),
            PerAxis(c.Dilation ?? "1", c.Spatial.Length), [.. PerAxis(c.Causal ?? "0", c.Spatial.Length).Select(x => x == 1)],
            c.Scale ?? (1 / Math.Sqrt(c.HeadDim)));
        var (expectedOutput, expectedLse) = BruteForceAttention.Run(problem, q, k, v, ak, av);

        var output = Npy.Read(dir.File("o.npy"));
        using (Assert.EnterMultipleScope())
        {
            Assert.That(output.IsFloat16, Is.False, "outputs are always float32");
            Assert.That(output.Shape, Is.EqualTo(new[] { c.Batch }.Concat(c.Spatial).Concat([c.Heads, c.ValueDim])));
            Assert.That(output.Length, Is.EqualTo(c.Batch * tokens * c.Heads * c.ValueDim));
        }

        // Every backend must agree to 1e-5 in float32. A float16 output is rounded to half precision:
        // half an ulp of |o| < 1 is 2^-12.
        var outputTolerance = c.Float16 ? 1.0 / 2048 : Float32Tolerance;
        Assert.That(MaxAbsDiff(output.Float32Data!, expectedOutput), Is.LessThanOrEqualTo(outputTolerance));
        if (c.Lse)
        {
            var lse = Npy.Read(dir.File("lse.npy"));
            Assert.That(lse.Shape, Is.EqualTo(new[] { c.Batch }.Concat(c.Spatial).Concat([c.Heads])));
            Assert.That(MaxAbsDiff(lse.Float32Data!, expectedLse), Is.LessThanOrEqualTo(c.Float16 ? 1e-4 : Float32Tolerance));
        }
        else
        {
            Assert.That(File.Exists(dir.File("lse.npy")), Is.False);
        }
    }

    [Test]
    public void BruteForceWindowRuleSpecialCases()
    {
        // The oracle's own sanity: classic NA shifts at borders, s = K gives blocks, causal truncates.
        int[] Window(int i, int n, int k, int s, int d, bool causal)
            => [.. Enumerable.Range(0, n).Where(j => BruteForceAttention.Allowed(i, j, n, k, s, d, causal))];

        using (Assert.EnterMultipleScope())
        {
            Assert.That(Window(0, 10, 3, 1, 1, false), Is.EqualTo(new[] { 0, 1, 2 }));
            Assert.That(Window(5, 10, 3, 1, 1, false), Is.EqualTo(new[] { 4, 5, 6 }));
            Assert.That(Window(9, 10, 3, 1, 1, false), Is.EqualTo(new[] { 7, 8, 9 }));
            Assert.That(Window(5, 10, 4, 1, 1, false), Is.EqualTo(new[] { 3, 4, 5, 6 }), "even K: one more key on the left");
            Assert.That(Window(5, 12, 4, 4, 1, false), Is.EqualTo(new[] { 4, 5, 6, 7 }), "s = K: blocks");
            Assert.That(Window(1, 10, 3, 1, 1, true), Is.EqualTo(new[] { 0, 1 }));
            Assert.That(Window(6, 10, 3, 1, 1, true), Is.EqualTo(new[] { 4, 5, 6 }));
            Assert.That(Window(4, 10, 3, 1, 2, false), Is.EqualTo(new[] { 2, 4, 6 }), "dilation 2, group 0");
            Assert.That(Window(9, 10, 2, 1, 2, false), Is.EqualTo(new[] { 7, 9 }), "dilation 2, group 1, at the end");
        }
    }

    private static IEnumerable<TestCaseData> ErrorCases()
    {
        // {dir}/q.npy, k.npy, v.npy: [1, 8, 8, 2, 4]; kbad.npy: [1, 8, 7, 2, 4]; q3.npy: 3 heads; f8.npy: float64.
        string[] Base(params string[] extra)
            => ["run", "--query", "{dir}/q.npy", "--key", "{dir}/k.npy", "--value", "{dir}/v.npy", "--output", "{dir}/o.npy", .. extra];

        TestCaseData Case(string name, int code, string contains, string[] args)
            => new TestCaseData(args, code, contains).SetName($"RunError_{name}");

        yield return Case("MissingQuery", 2, "--query is required",
            ["run", "--key", "{dir}/k.npy", "--value", "{dir}/v.npy", "--output", "{dir}/o.npy", "--kernel-size", "3"]);
        yield return Case("MissingKernelSize", 2, "--kernel-size is required", Base());
        yield return Case("MissingValueAfterOption", 2, "--output needs a value",
            ["run", "--query", "{dir}/q.npy", "--key", "{dir}/k.npy", "--value", "{dir}/v.npy", "--kernel-size", "3", "--output"]);
        yield return Case("NonexistentFile", 1, "--query",
            ["run", "--query", "{dir}/missing.npy", "--key", "{dir}/k.npy", "--value", "{dir}/v.npy", "--output", "{dir}/o.npy", "--kernel-size", "3"]);
        yield return Case("NotNpyFile", 1, "not a .npy file",
            ["run", "--query", "{dir}/notes.txt", "--key", "{dir}/k.npy", "--value", "{dir}/v.npy", "--output", "{dir}/o.npy", "--kernel-size", "3"]);
        yield return Case("DirectoryAsFile", 1, "directory",
            ["run", "--query", "{dir}", "--key", "{dir}/k.npy", "--value", "{dir}/v.npy", "--output", "{dir}/o.npy", "--kernel-size", "3"]);
        yield return Case("Float64File", 1, "'<f8' is not supported",
            ["run", "--query", "{dir}/q.npy", "--key", "{dir}/f8.npy", "--value", "{dir}/v.npy", "--output", "{dir}/o.npy", "--kernel-size", "3"]);
        yield return Case("KernelSizeOne", 2, "--kernel-size", Base("--kernel-size", "1"));
        yield return Case("KernelLargerThanAxis", 2, "axis length", Base("--kernel-size", "9"));
        yield return Case("KernelTimesDilationTooLarge", 2, "--dilation", Base("--kernel-size", "3", "--dilation", "1x3"));
        yield return Case("StrideLargerThanKernel", 2, "--stride", Base("--kernel-size", "3", "--stride", "4"));
        yield return Case("KernelAxisCountMismatch", 2, "--kernel-size", Base("--kernel-size", "3x3x3"));
        yield return Case("MismatchedKeyShape", 2, "--key",
            ["run", "--query", "{dir}/q.npy", "--key", "{dir}/kbad.npy", "--value", "{dir}/v.npy", "--output", "{dir}/o.npy", "--kernel-size", "3"]);
        yield return Case("MismatchedValueHeads", 2, "--value",
            ["run", "--query", "{dir}/q.npy", "--key", "{dir}/k.npy", "--value", "{dir}/v1h.npy", "--output", "{dir}/o.npy", "--kernel-size", "3"]);
        yield return Case("QueryWrongRank", 2, "--query",
            ["run", "--query", "{dir}/flat.npy", "--key", "{dir}/k.npy", "--value", "{dir}/v.npy", "--output", "{dir}/o.npy", "--kernel-size", "3"]);
        yield return Case("HeadsNotMultipleOfKvHeads", 2, "multiple",
            ["run", "--query", "{dir}/q3.npy", "--key", "{dir}/k.npy", "--value", "{dir}/v.npy", "--output", "{dir}/o.npy", "--kernel-size", "3"]);
        yield return Case("UnknownBackend", 2, "unknown backend 'warp-drive'", Base("--kernel-size", "3", "--backend", "warp-drive"));
        yield return Case("UnknownOption", 2, "unknown option '--frobnicate'", Base("--kernel-size", "3", "--frobnicate", "2"));
        yield return Case("StrayArgument", 2, "unexpected argument 'extra'", Base("--kernel-size", "3", "extra"));
        yield return Case("BadNumberInAxes", 2, "--kernel-size: '7xa'", Base("--kernel-size", "7xa"));
        yield return Case("TooManyAxes", 2, "--kernel-size", Base("--kernel-size", "3x3x3x3"));
        yield return Case("BadCausal", 2, "--causal", Base("--kernel-size", "3", "--causal", "0x2"));
        yield return Case("BadScale", 2, "--scale: 'abc'", Base("--kernel-size", "3", "--scale", "abc"));
        yield return Case("NegativeScale", 2, "--scale", Base("--kernel-size", "3", "--scale", "-1"));
        yield return Case("DuplicateOption", 2, "--kernel-size is given more than once", Base("--kernel-size", "3", "--kernel-size", "5"));
        yield return Case("AdditionalKeyWithoutValue", 2, "together", Base("--kernel-size", "3", "--additional-key", "{dir}/ak.npy"));
        yield return Case("AdditionalKeyWrongShape", 2, "--additional-key",
            Base("--kernel-size", "3", "--additional-key", "{dir}/k.npy", "--additional-value", "{dir}/v.npy"));
        yield return Case("OutputDirectoryMissing", 1, "--output",
            ["run", "--query", "{dir}/q.npy", "--key", "{dir}/k.npy", "--value", "{dir}/v.npy", "--output", "{dir}/nowhere/o.npy", "--kernel-size", "3"]);
        yield return Case("UnknownCommand", 2, "unknown command 'walk'", ["walk"]);
        yield return Case("NoCommand", 2, "no command", []);
        yield return Case("OptionBeforeCommand", 2, "'--kernel-size' is not a known option", ["--kernel-size", "3", "run"]);
    }

    [TestCaseSource(nameof(ErrorCases))]
    public void ErrorsAreOneLine(string[] args, int exitCode, string contains)
    {
        using var dir = new TempDirectory();
        int[] good = [1, 8, 8, 2, 4];
        var size = good.Aggregate(1, (a, b) => a * b);
        var rng = new Random(7);
        float[] RandomArray(int n) => [.. Enumerable.Range(0, n).Select(_ => rng.NextSingle())];
        Npy.Write(dir.File("q.npy"), good, RandomArray(size));
        Npy.Write(dir.File("k.npy"), good, RandomArray(size));
        Npy.Write(dir.File("v.npy"), good, RandomArray(size));
        Npy.Write(dir.File("kbad.npy"), [1, 8, 7, 2, 4], RandomArray(size / 8 * 7));
        Npy.Write(dir.File("v1h.npy"), [1, 8, 8, 1, 4], RandomArray(size / 2));
        Npy.Write(dir.File("q3.npy"), [1, 8, 8, 3, 4], RandomArray(size / 2 * 3));
        Npy.Write(dir.File("flat.npy"), [64, 4], RandomArray(256));
        File.WriteAllBytes(dir.File("f8.npy"), NpyTests.Build(1, 0, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 8, 8, 2, 4), }", new byte[size * 8]));
        File.WriteAllText(dir.File("notes.txt"), "these are not the arrays you are looking for\n");

        var result = CliRunner.Run([.. args.Select(a => a.Replace("{dir}", dir.Path, StringComparison.Ordinal))]);
        result.AssertOneLineError(exitCode, contains);
        Assert.That(File.Exists(dir.File("o.npy")), Is.False, "a failed run writes no output");
    }

    [TestCase("--help")]
    [TestCase("-h")]
    [TestCase("help")]
    public void TopLevelHelp(string flag)
    {
        var result = CliRunner.Run(flag);
        result.AssertSuccess();
        Assert.That(result.Stdout, Does.StartWith("Usage: natten <command>"));
    }

    [TestCase("run")]
    [TestCase("profile")]
    public void CommandHelp(string command)
    {
        // Help wins over everything else on the line, even unknown options.
        var result = CliRunner.Run(command, "--bogus", "--help");
        result.AssertSuccess();
        Assert.That(result.Stdout, Does.StartWith($"Usage: natten {command}"));
        Assert.That(result.Stdout, Does.Contain("--kernel-size"));
    }

    [Test]
    public void Version()
    {
        var result = CliRunner.Run("--version");
        result.AssertSuccess();
        Assert.That(result.Stdout, Does.Match(@"^natten \d+\.\d+"));
    }

    [Test]
    public void ApiMessagesLoseTheParameterSuffix()
    {
        var message = CliApp.CleanArgumentMessage(new ArgumentException("options.KernelSize on axis 0 is 1.", "options"));
        Assert.That(message, Is.EqualTo("--kernel-size on axis 0 is 1."));
    }

    private static int[] PerAxis(string text, int rank)
    {
        var parts = text.Split('x').Select(p => int.Parse(p, CultureInfo.InvariantCulture)).ToArray();
        return parts.Length == 1 ? [.. Enumerable.Repeat(parts[0], rank)] : parts;
    }

    private static double MaxAbsDiff(float[] actual, double[] expected)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length));
        var max = 0.0;
        for (var i = 0; i < actual.Length; i++)
        {
            var diff = Math.Abs(actual[i] - expected[i]);
            max = double.IsNaN(diff) ? double.PositiveInfinity : Math.Max(max, diff);
        }

        return max;
    }
}

/// <summary>
/// A direct, deliberately naive neighborhood attention in double: every (query, key) pair is tested
/// with classic NATTEN's window-start formula (extended to stride leaders and dilation groups).
/// </summary>
internal static class BruteForceAttention
{
    public sealed record Problem(
        int Batch, int[] Spatial, int Heads, int KvHeads, int HeadDim, int ValueDim, int AdditionalTokens,
        int[] Kernel, int[] Stride, int[] Dilation, bool[] Causal, double Scale);

    /// <summary>Whether a query at <paramref name="i"/> may see the key at <paramref name="j"/> on one axis of length <paramref name="n"/>.</summary>
    public static bool Allowed(int i, int j, int n, int k, int s, int d, bool causal)
    {
        if (i % d != j % d)
        {
            return false;
        }

        var group = i % d;
        var length = (n - group + d - 1) / d;
        int qi = i / d, kj = j / d;
        if (causal)
        {
            // The stride group's last member leads; keys from K - 1 behind the leader up to the query itself.
            var leader = Math.Min(((qi / s) * s) + s - 1, length - 1);
            return kj <= qi && leader - kj < k;
        }

        var center = Math.Min(((qi / s) * s) + (s / 2), length - 1);
        int left = k / 2, right = (k / 2) + (k % 2) - 1;
        var start = Math.Max(center - left, 0);
        if (center + right >= length)
        {
            start = length - k;
        }

        return kj >= start && kj < start + k;
    }

    /// <summary>Output <c>[B, X.., H, Dv]</c> and LSE <c>[B, X.., H]</c>.</summary>
    public static (double[] Output, double[] Lse) Run(Problem p, double[] q, double[] k, double[] v, double[] ak, double[] av)
    {
        var rank = p.Spatial.Length;
        var tokens = p.Spatial.Aggregate(1, (a, b) => a * b);
        var output = new double[p.Batch * tokens * p.Heads * p.ValueDim];
        var lse = new double[p.Batch * tokens * p.Heads];
        var group = p.Heads / p.KvHeads;

        int[] Coordinates(int t)
        {
            var c = new int[rank];
            for (var a = rank - 1; a >= 0; a--)
            {
                c[a] = t % p.Spatial[a];
                t /= p.Spatial[a];
            }

            return c;
        }

        var coords = Enumerable.Range(0, tokens).Select(Coordinates).ToArray();
        for (var b = 0; b < p.Batch; b++)
        {
            for (var t = 0; t < tokens; t++)
            {
                for (var h = 0; h < p.Heads; h++)
                {
                    var kvh = h / group;
                    var scores = new List<double>();
                    var values = new List<double[]>();
                    var qRow = (((b * tokens) + t) * p.Heads) + h;
                    for (var u = 0; u < tokens; u++)
                    {
                        var allowed = true;
                        for (var a = 0; a < rank && allowed; a++)
                        {
                            allowed = Allowed(coords[t][a], coords[u][a], p.Spatial[a], p.Kernel[a], p.Stride[a], p.Dilation[a], p.Causal[a]);
                        }

                        if (allowed)
                        {
                            var kvRow = (((b * tokens) + u) * p.KvHeads) + kvh;
                            scores.Add(p.Scale * Dot(q, qRow * p.HeadDim, k, kvRow * p.HeadDim, p.HeadDim));
                            values.Add(v[(kvRow * p.ValueDim)..((kvRow + 1) * p.ValueDim)]);
                        }
                    }

                    for (var n = 0; n < p.AdditionalTokens; n++)
                    {
                        var kvRow = (((b * p.AdditionalTokens) + n) * p.KvHeads) + kvh;
                        scores.Add(p.Scale * Dot(q, qRow * p.HeadDim, ak, kvRow * p.HeadDim, p.HeadDim));
                        values.Add(av[(kvRow * p.ValueDim)..((kvRow + 1) * p.ValueDim)]);
                    }

                    var max = scores.Max();
                    var weights = scores.Select(s => Math.Exp(s - max)).ToArray();
                    var sum = weights.Sum();
                    for (var e = 0; e < p.ValueDim; e++)
                    {
                        output[(qRow * p.ValueDim) + e] = weights.Select((w, i) => w * values[i][e]).Sum() / sum;
                    }

                    lse[qRow] = max + Math.Log(sum);
                }
            }
        }

        return (output, lse);
    }

    private static double Dot(double[] x, int xOffset, double[] y, int yOffset, int length)
    {
        var sum = 0.0;
        for (var i = 0; i < length; i++)
        {
            sum += x[xOffset + i] * y[yOffset + i];
        }

        return sum;
    }
}
