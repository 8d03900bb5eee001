using System.Globalization;
using Natten.Cli;

namespace Natten.Tests.Cli;

/// <summary>The outcome of one in-process <c>natten</c> invocation.</summary>
internal sealed record CliResult(int ExitCode, string Stdout, string Stderr)
{
    public string[] StderrLines => Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);

    /// <summary>The contract for every failure: non-zero exit, one <c>natten: </c> line on stderr, no stack trace.</summary>
    public void AssertOneLineError(int expectedExitCode, string? contains = null)
    {
        using (Assert.EnterMultipleScope())
        {
            Assert.That(ExitCode, Is.EqualTo(expectedExitCode), $"stderr: {Stderr}");
            Assert.That(StderrLines, Has.Length.EqualTo(1), $"stderr: {Stderr}");
            Assert.That(Stderr, Does.StartWith("natten: "));
            Assert.That(Stderr + Stdout, Does.Not.Contain("   at "));
            if (contains is not null)
            {
                Assert.That(Stderr, Does.Contain(contains));
            }
        }
    }

    public void AssertSuccess()
    {
        using (Assert.EnterMultipleScope())
        {
            Assert.That(ExitCode, Is.Zero, $"stderr: {Stderr}");
            Assert.That(Stderr, Is.Empty);
        }
    }
}

/// <summary>Runs the tool in-process through <c>CliApp.Run</c>.</summary>
internal static class CliRunner
{
    public static CliResult Run(params string[] args)
    {
        using var stdout = new StringWriter(CultureInfo.InvariantCulture) { NewLine = "\n" };
        using var stderr = new StringWriter(CultureInfo.InvariantCulture) { NewLine = "\n" };
        var code = CliApp.Run(args, stdout, stderr);
        return new CliResult(code, stdout.ToString(), stderr.ToString());
    }
}

/// <summary>A scratch directory deleted on dispose.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "natten-cli-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: a leftover temp folder must not fail a test.
        }
    }
}
