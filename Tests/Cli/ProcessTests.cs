using System.Diagnostics;
using Natten.Cli;

namespace Natten.Tests.Cli;

/// <summary>The real executable: Program.Main wiring, exit codes and stderr as a shell sees them.</summary>
[TestFixture]
public sealed class ProcessTests
{
    [Test]
    public void BadNumberIsOneLineOnStderrWithExitCode2()
    {
        var (code, stdout, stderr) = RunProcess("run", "--query", "q.npy", "--key", "k.npy", "--value", "v.npy", "--output", "o.npy", "--kernel-size", "7xa");
        using (Assert.EnterMultipleScope())
        {
            Assert.That(code, Is.EqualTo(2));
            Assert.That(stdout, Is.Empty);
            Assert.That(stderr.TrimEnd('\n').Split('\n'), Has.Length.EqualTo(1));
            Assert.That(stderr, Does.StartWith("natten: --kernel-size: '7xa'"));
            Assert.That(stderr, Does.Not.Contain("   at "));
        }
    }

    [Test]
    public void MissingFileExitsWith1()
    {
        var missing = Path.Combine(Path.GetTempPath(), "natten-" + Guid.NewGuid().ToString("N") + ".npy");
        var (code, _, stderr) = RunProcess("run", "--query", missing, "--key", missing, "--value", missing, "--output", "o.npy", "--kernel-size", "3");
        using (Assert.EnterMultipleScope())
        {
            Assert.That(code, Is.EqualTo(1));
            Assert.That(stderr, Does.StartWith($"natten: --query '{missing}': file not found"));
        }
    }

    [Test]
    public void HelpExitsWith0()
    {
        var (code, stdout, stderr) = RunProcess("--help");
        using (Assert.EnterMultipleScope())
        {
            Assert.That(code, Is.Zero);
            Assert.That(stdout, Does.StartWith("Usage: natten"));
            Assert.That(stderr, Is.Empty);
        }
    }

    private static (int Code, string Stdout, string Stderr) RunProcess(params string[] args)
    {
        var dll = typeof(CliApp).Assembly.Location;
        var host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } path ? path : "dotnet";
        var info = new ProcessStartInfo(host)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(dll);
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEnd();
        if (!process.WaitForExit(60_000))
        {
            process.Kill();
            Assert.Fail("natten did not exit within 60 s");
        }

        return (process.ExitCode, stdout.Result, stderr);
    }
}
