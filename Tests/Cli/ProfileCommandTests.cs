using System.Text.Json;
using Natten.Cli;

namespace Natten.Tests.Cli;

/// <summary><c>natten profile</c> on tiny problems: the output format, not the speed.</summary>
[TestFixture]
public sealed class ProfileCommandTests
{
    private static readonly string[] _tiny = ["profile", "--shape", "6x6", "--kernel-size", "3", "--heads", "2", "--dim", "4", "--warmup", "0", "--repeat", "2"];

    [Test]
    public void JsonLinesHaveEveryField()
    {
        var result = CliRunner.Run([.. _tiny, "--backend", "reference", "--backward", "--json", "--seed", "5"]);
        result.AssertSuccess();
        var lines = result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(2));

        // Useful FLOPs by hand: 4·B·H·N·∏K·D for plain NA (D = Dv): 4·1·2·36·9·4.
        const double forwardGflop = 4.0 * 1 * 2 * 36 * 9 * 4 / 1e9;
        var passes = new List<string>();
        foreach (var line in lines)
        {
            using var doc = JsonDocument.Parse(line);
            var root = doc.RootElement;
            var pass = root.GetProperty("pass").GetString()!;
            passes.Add(pass);
            using (Assert.EnterMultipleScope())
            {
                Assert.That(root.GetProperty("backend").GetString(), Is.EqualTo("reference"));
                Assert.That(root.GetProperty("dtype").GetString(), Is.EqualTo("fp32"));
                Assert.That(root.GetProperty("rank").GetInt32(), Is.EqualTo(2));
                Assert.That(root.GetProperty("batch").GetInt32(), Is.EqualTo(1));
                Assert.That(Ints(root, "shape"), Is.EqualTo(new[] { 6, 6 }));
                Assert.That(root.GetProperty("heads").GetInt32(), Is.EqualTo(2));
                Assert.That(root.GetProperty("kv_heads").GetInt32(), Is.EqualTo(2));
                Assert.That(root.GetProperty("dim").GetInt32(), Is.EqualTo(4));
                Assert.That(root.GetProperty("value_dim").GetInt32(), Is.EqualTo(4));
                Assert.That(root.GetProperty("additional_tokens").GetInt32(), Is.Zero);
                Assert.That(Ints(root, "kernel_size"), Is.EqualTo(new[] { 3, 3 }));
                Assert.That(Ints(root, "stride"), Is.EqualTo(new[] { 1, 1 }));
                Assert.That(Ints(root, "dilation"), Is.EqualTo(new[] { 1, 1 }));
                Assert.That(root.GetProperty("causal").EnumerateArray().Select(e => e.GetBoolean()), Is.EqualTo(new[] { false, false }));
                Assert.That(root.GetProperty("seed").GetInt32(), Is.EqualTo(5));
                Assert.That(root.GetProperty("repeat").GetInt32(), Is.EqualTo(2));
                Assert.That(root.GetProperty("useful_gflop").GetDouble(), Is.EqualTo(pass == "backward" ? 2.5 * forwardGflop : forwardGflop).Within(1e-12));
                var median = root.GetProperty("ms_median").GetDouble();
                Assert.That(median, Is.GreaterThan(0));
                Assert.That(root.GetProperty("ms_min").GetDouble(), Is.LessThanOrEqualTo(median));
                Assert.That(root.GetProperty("useful_tflops").GetDouble(), Is.GreaterThan(0));
                Assert.That(root.GetProperty("speedup_vs_reference").GetDouble(), Is.EqualTo(1.0));
                Assert.That(root.GetProperty("speedup_vs_naive").ValueKind, Is.EqualTo(JsonValueKind.Null), "naive was not timed");
                Assert.That(Ints(root, "dense_kernel_size"), Is.EqualTo(new[] { 6, 6 }));
                Assert.That(root.GetProperty("dense_ms_median").GetDouble(), Is.GreaterThan(0));
                Assert.That(root.GetProperty("speedup_vs_dense").GetDouble(), Is.GreaterThan(0));
                Assert.That(root.GetProperty("flop_bound").GetDouble(), Is.EqualTo(36.0 / 9).Within(1e-9));
                Assert.That(root.GetProperty("tiles").ValueKind, Is.EqualTo(JsonValueKind.Null));
                Assert.That(root.GetProperty("simulated_bound").ValueKind, Is.EqualTo(JsonValueKind.Null));
                Assert.That(root.GetProperty("skipped_reason").ValueKind, Is.EqualTo(JsonValueKind.Null));
                Assert.That(root.GetProperty("machine").GetString(), Does.Contain("cores"));
                Assert.That(root.GetProperty("optimized_build").ValueKind, Is.AnyOf(JsonValueKind.True, JsonValueKind.False));
            }
        }

        Assert.That(passes, Is.EqualTo(new[] { "forward", "backward" }));
    }

    [Test]
    public void AllBackendsAppearOncePerPass()
    {
        var result = CliRunner.Run([.. _tiny, "--json", "--backward", "--dtype", "fp16", "--kv-heads", "1", "--value-dim", "3"]);
        result.AssertSuccess();
        var rows = result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => JsonDocument.Parse(l).RootElement)
            .Select(r => (Backend: r.GetProperty("backend").GetString(), Pass: r.GetProperty("pass").GetString()))
            .ToArray();
        var expected = new[] { "forward", "backward" }.SelectMany(p => AttentionBackends.Names.Select(b => (Backend: (string?)b, Pass: (string?)p)));
        Assert.That(rows, Is.EquivalentTo(expected));
    }

    [Test]
    public void Float16BackwardWithAdditionalTokensIsSkippedWithAReason()
    {
        var result = CliRunner.Run([.. _tiny, "--json", "--backward", "--dtype", "fp16", "--additional-tokens", "2", "--backend", "reference"]);
        result.AssertSuccess();
        var lines = result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        var backward = lines.Single(r => r.GetProperty("pass").GetString() == "backward");
        var forward = lines.Single(r => r.GetProperty("pass").GetString() == "forward");
        using (Assert.EnterMultipleScope())
        {
            Assert.That(forward.GetProperty("ms_median").GetDouble(), Is.GreaterThan(0));
            Assert.That(forward.GetProperty("additional_tokens").GetInt32(), Is.EqualTo(2));
            Assert.That(backward.GetProperty("skipped_reason").GetString(), Does.Contain("float16"));
            Assert.That(backward.GetProperty("ms_median").ValueKind, Is.EqualTo(JsonValueKind.Null));
            Assert.That(backward.GetProperty("speedup_vs_reference").ValueKind, Is.EqualTo(JsonValueKind.Null));
        }
    }

    [Test]
    public void Float16BackwardWithAdditionalTokensRunsOnDeviceTensors()
    {
        // The ILGPU backends are timed through the device-tensor backward, which takes additional tokens.
        var result = CliRunner.Run([.. _tiny, "--json", "--backward", "--dtype", "fp16", "--additional-tokens", "2", "--backend", "naive", "--no-dense"]);
        result.AssertSuccess();
        var backward = result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement)
            .Single(r => r.GetProperty("pass").GetString() == "backward");
        Assert.That(backward.GetProperty("skipped_reason").ValueKind, Is.EqualTo(JsonValueKind.Null));
        Assert.That(backward.GetProperty("ms_median").GetDouble(), Is.GreaterThan(0));
    }

    [Test]
    public void TableHasHeaderAndRows()
    {
        var result = CliRunner.Run([.. _tiny, "--backward", "--causal", "0x1", "--stride", "2"]);
        result.AssertSuccess();
        var lines = result.Stdout.Split('\n');
        using (Assert.EnterMultipleScope())
        {
            Assert.That(lines[0], Does.StartWith("natten profile: 2D B=1 6x6 H=2/2 D=4 Dv=4, kernel 3x3 stride 2x2 dilation 1x1 causal 0x1, fp32"));
            Assert.That(lines[0], Does.Contain("GFLOP"));
            Assert.That(lines[1], Does.StartWith("machine: CPU "));
            Assert.That(lines[2], Does.StartWith("timing: ").And.Contain("fused").And.Contain("naive").And.Contain("the other backends on host spans"));
            Assert.That(lines[3], Does.StartWith("dense: the same problem with kernel 6x6 (K = n on every axis), stride 1, dilation 1, non-causal"));
            Assert.That(lines, Has.Some.Match(
                @"^backend\s+pass\s+median ms\s+min ms\s+useful TFLOP/s\s+vs reference\s+vs naive\s+dense ms\s+vs dense\s+bound\s+device MB$"));
            Assert.That(lines, Has.Some.Match(
                @"^reference\s+forward\s+\d+\.\d{3}\s+\d+\.\d{3}\s+\S+\s+1\.00x\s+(\d+\.\d{2}x|n/a)\s+\d+\.\d{3}\s+\d+\.\d{2}x\s+n/a\s+host$"));
            Assert.That(lines, Has.Some.Match(@"^reference\s+backward\s"));
        }
    }

    [Test]
    public void DefaultProblemRunsEveryBackend()
    {
        // Speed is measured by the profiler itself, not asserted here; this checks the default run works end to end.
        var result = CliRunner.Run("profile");
        result.AssertSuccess();
        Assert.That(result.Stdout, Does.Contain("16x16"));
        foreach (var backend in AttentionBackends.Names)
        {
            Assert.That(result.Stdout, Does.Match($@"(?m)^{backend}\s+forward\s"), backend);
        }
    }

    private static IEnumerable<TestCaseData> ErrorCases()
    {
        TestCaseData Case(string name, string contains, params string[] args) => new TestCaseData(args, contains).SetName($"ProfileError_{name}");
        yield return Case("BadDtype", "--dtype: 'fp64'", "profile", "--dtype", "fp64");
        yield return Case("ZeroRepeat", "--repeat is 0", "profile", "--repeat", "0");
        yield return Case("NegativeWarmup", "--warmup", "profile", "--warmup", "-1");
        yield return Case("BadInteger", "--heads: 'four'", "profile", "--heads", "four");
        yield return Case("KernelLargerThanShape", "axis length", "profile", "--shape", "8x8", "--kernel-size", "9");
        yield return Case("HeadsNotMultiple", "multiple", "profile", "--shape", "8x8", "--kernel-size", "3", "--heads", "3", "--kv-heads", "2");
        yield return Case("UnknownBackend", "unknown backend", "profile", "--backend", "nope");
        yield return Case("FlagWithValue", "--json is a flag", "profile", "--json=yes");
        yield return Case("UnknownOption", "unknown option '--size'", "profile", "--size", "8");
        yield return Case("BadShape", "--shape", "profile", "--shape", "8x8x8x8");
    }

    [TestCaseSource(nameof(ErrorCases))]
    public void ErrorsAreOneLine(string[] args, string contains) => CliRunner.Run(args).AssertOneLineError(2, contains);

    [Test]
    public void ArgumentReaderForms()
    {
        var reader = new ArgumentReader(["--seed=-3", "--json", "--name", "-x", "--empty="]);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(reader.GetInt("--seed"), Is.EqualTo(-3));
            Assert.That(reader.GetFlag("--json"), Is.True);
            Assert.That(reader.GetFlag("--absent"), Is.False);
            Assert.That(reader.GetString("--name"), Is.EqualTo("-x"), "a single dash is a value, not an option");
            Assert.That(() => reader.GetString("--empty"), Throws.TypeOf<CliException>().With.Message.Contains("needs a value"));
            Assert.That(() => reader.ThrowIfUnused("test"), Throws.Nothing);
        }
    }

    private static int[] Ints(JsonElement root, string name) => [.. root.GetProperty(name).EnumerateArray().Select(e => e.GetInt32())];

    [Test]
    public void Bfloat16AndTf32RunWithDeviceResidentTimings()
    {
        // bf16 on every backend (fused, naive on device tensors; cpu and reference on host spans), and --tf32 reaches the options.
        var bf16 = CliRunner.Run("profile", "--shape", "6x6", "--kernel-size", "3", "--heads", "2", "--dim", "16", "--dtype", "bf16",
            "--backend", "fused,naive,cpu,reference", "--backward", "--warmup", "0", "--repeat", "1", "--no-dense", "--json");
        bf16.AssertSuccess();
        var rows = ProfileTuningTests.JsonLines(bf16.Stdout);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(rows, Has.Length.EqualTo(8));
            Assert.That(rows.Select(r => r.GetProperty("dtype").GetString()), Is.All.EqualTo("bf16"));
            Assert.That(rows.Select(r => r.GetProperty("skipped_reason").ValueKind), Is.All.EqualTo(System.Text.Json.JsonValueKind.Null));
            foreach (var row in rows)
            {
                var device = row.GetProperty("backend").GetString() is "fused" or "naive";
                Assert.That(row.GetProperty("timing").GetString(), Is.EqualTo(device ? "device-resident" : "host"));
            }
        }

        var tf32 = CliRunner.Run("profile", "--shape", "6x6", "--kernel-size", "3", "--heads", "1", "--dim", "16", "--tf32",
            "--backend", "fused", "--warmup", "0", "--repeat", "1", "--no-dense", "--json");
        tf32.AssertSuccess();
        Assert.That(ProfileTuningTests.JsonLines(tf32.Stdout).Single().GetProperty("allow_tf32").GetBoolean(), Is.True);
    }
}
