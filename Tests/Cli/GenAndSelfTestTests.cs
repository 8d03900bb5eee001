using Natten.Cli;

namespace Natten.Tests.Cli;

/// <summary><c>natten gen</c> and <c>natten selftest</c> (the commands a GPU session runs first).</summary>
public sealed class GenAndSelfTestTests
{
    [Test]
    public void GenWritesInputsInNattenLayoutRoundedToTheRequestedType()
    {
        using var dir = new TempDirectory();
        var result = CliRunner.Run("gen", "--shape", "5x6", "--heads", "4", "--kv-heads", "2", "--dim", "8", "--value-dim", "4", "--round", "bf16", "--out", dir.Path);
        result.AssertSuccess();
        var q = Npy.Read(dir.File("q.npy"));
        Assert.That(q.Shape, Is.EqualTo(new[] { 1, 5, 6, 4, 8 }));
        Assert.That(Npy.Read(dir.File("k.npy")).Shape, Is.EqualTo(new[] { 1, 5, 6, 2, 8 }));
        Assert.That(Npy.Read(dir.File("v.npy")).Shape, Is.EqualTo(new[] { 1, 5, 6, 2, 4 }));
        Assert.That(Npy.Read(dir.File("do.npy")).Shape, Is.EqualTo(new[] { 1, 5, 6, 4, 4 }));
        Assert.That(q.Float32Data!.All(x => BFloat16Conversions.ToSingle(BFloat16Conversions.FromSingle(x)) == x), Is.True, "values are bf16-exact");
        Assert.That(q.Float32Data!.Distinct().Count(), Is.GreaterThan(100), "random, not constant");
    }

    [Test]
    public void GenIsSeeded()
    {
        using var a = new TempDirectory();
        using var b = new TempDirectory();
        CliRunner.Run("gen", "--shape", "16", "--seed", "3", "--out", a.Path).AssertSuccess();
        CliRunner.Run("gen", "--shape", "16", "--seed", "3", "--out", b.Path).AssertSuccess();
        Assert.That(Npy.Read(a.File("k.npy")).Float32Data, Is.EqualTo(Npy.Read(b.File("k.npy")).Float32Data));
    }

    [Test]
    public void GenRejectsBadShapes()
        => CliRunner.Run("gen", "--shape", "4x0", "--out", "x").AssertOneLineError(ExitCodes.Usage, "--shape");

    [Test]
    public void SelfTestPassesOnThisMachineAndSaysSo()
    {
        var result = CliRunner.Run("selftest", "--count", "2", "--seed", "5", "--backend", "fused,naive", "--dtype", "fp32,fp16");
        result.AssertSuccess();
        var lines = result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines[^1], Does.Match(@"^\d+ passed, 0 failed, \d+ skipped$"));
        Assert.That(lines.Count(l => l.StartsWith("ok", StringComparison.Ordinal)), Is.GreaterThan(8));
        Assert.That(result.Stdout, Does.Contain("fused fp16 dQ").And.Contain("naive fp32 lse"));
    }

    [Test]
    public void SelfTestRejectsUnknownTypes()
        => CliRunner.Run("selftest", "--dtype", "fp8").AssertOneLineError(ExitCodes.Usage, "--dtype");

    [Test]
    public void SelfTestCoversTheTf32Forward()
    {
        var result = CliRunner.Run("selftest", "--count", "1", "--seed", "6", "--backend", "fused", "--dtype", "tf32");
        result.AssertSuccess();
        var lines = result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines[^1], Does.Match(@"^5 passed, 0 failed, 1 skipped$"), "the two fragment-load checks and the async copy check, then output and LSE, forward only; the address-space check needs CUDA");
        Assert.That(lines.Where(l => l.StartsWith("ok", StringComparison.Ordinal) && l.Contains(" seed ", StringComparison.Ordinal)), Has.All.Contain(" fused tf32 "));

        // TF32 products must show: an output error above what float32 math gives (the fp32 tolerance is 2e-5).
        var output = lines.Single(l => l.Contains(" tf32 output:", StringComparison.Ordinal));
        var error = double.Parse(
            System.Text.RegularExpressions.Regex.Match(output, @"max error (\S+) ").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.That(error, Is.GreaterThan(2e-5), output);
    }

    [Test]
    public void SelfTestSeedsOfTheGpuSessionReachTheGeneratedKernelHeadDims()
    {
        // Perf/device/gpu-session.sh runs seeds 1-6: they must include D = Dv = 64 and D = Dv = 128.
        var result = CliRunner.Run("selftest", "--count", "6", "--seed", "1", "--backend", "reference", "--dtype", "fp32", "--no-backward");
        result.AssertSuccess();
        var problems = result.Stdout.Split('\n').Where(l => l.StartsWith("ok", StringComparison.Ordinal) && l.Contains(" output:", StringComparison.Ordinal)).ToArray();
        Assert.That(problems, Has.Some.Contain("D=64 Dv=64"));
        Assert.That(problems, Has.Some.Contain("D=128 Dv=128"));
    }

    [Test]
    public void SelfTestChecksTheFragmentLoadsAndTheAsyncCopyFirst()
    {
        var result = CliRunner.Run("selftest", "--count", "1", "--seed", "1", "--backend", "reference", "--dtype", "fp32", "--no-backward");
        result.AssertSuccess();
        var lines = result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines[1], Does.StartWith("ok    fragment loads (ldmatrix) on ").And.EndWith(": 0 of 1024 registers wrong"));
        Assert.That(lines[2], Does.StartWith("ok    fragment loads (elements) on ").And.EndWith(": 0 of 1024 registers wrong"));
        Assert.That(lines[3], Does.StartWith("ok    async copy (cp.async, zero fill) on ").And.EndWith(": 0 of 512 elements wrong"));
        Assert.That(lines[4], Does.StartWith("skip  view address spaces and shared alignment on ").And.EndWith(": only CUDA has state spaces"));
        Assert.That(lines[5], Does.Contain(" seed 1 reference fp32 "));
    }
}
