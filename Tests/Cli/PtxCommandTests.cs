namespace Natten.Tests.Cli;

/// <summary><c>natten ptx</c>: the table, the JSON lines, the written files and the errors.</summary>
[TestFixture]
[Category("Ptx")]
public sealed class PtxCommandTests
{
    [Test]
    public void FilterSelectsTheTensorCoreKernelsAndWritesTheirPtx()
    {
        var dir = Path.Combine(Path.GetTempPath(), "natten-ptx-" + Guid.NewGuid().ToString("N"));
        try
        {
            var result = CliRunner.Run("ptx", "--filter", "FnaTensorCoreKernel.Forward", "--out", dir, "--json");
            result.AssertSuccess();
            var rows = ProfileTuningTests.JsonLines(result.Stdout);
            var files = Directory.GetFiles(dir, "*.ptx");
            using (Assert.EnterMultipleScope())
            {
                Assert.That(rows, Has.Length.EqualTo(Natten.Diagnostics.KernelInspection.KernelNames.Count(n => n.Contains("FnaTensorCoreKernel.Forward", StringComparison.OrdinalIgnoreCase))));
                Assert.That(rows, Has.Length.GreaterThanOrEqualTo(2), "fp16 and bf16");
                Assert.That(rows.Select(r => r.GetProperty("tensorCore").GetBoolean()), Is.All.True);
                Assert.That(rows.Select(r => r.GetProperty("mma").GetInt32()), Is.All.GreaterThan(0));
                Assert.That(files, Has.Length.EqualTo(rows.Length));
                Assert.That(files.Select(f => File.ReadAllText(f)), Is.All.Contain(".target sm_80"));
                Assert.That(files.Select(f => Path.GetFileName(f)), Is.All.Match(@"^[A-Za-z0-9._-]+\.ptx$"));
            }
        }
        finally
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }

    [Test]
    public void TableHasAHeaderAndOneLinePerKernel()
    {
        var result = CliRunner.Run("ptx", "--filter", "NaiveKernels.Softmax");
        result.AssertSuccess();
        var lines = result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(lines, Has.Length.EqualTo(2));
            Assert.That(lines[0], Does.StartWith("kernel"));
            Assert.That(lines[1], Does.Match(@"^NaiveKernels\.Softmax\s+\d+\s+0\s+0\s+0$"));
        }
    }

    [Test]
    public void UnknownFilterIsAUsageError()
        => CliRunner.Run("ptx", "--filter", "no-such-kernel").AssertOneLineError(2, "no kernel name contains 'no-such-kernel'");
}
