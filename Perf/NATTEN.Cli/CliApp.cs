using System.Reflection;
using Natten.Cli.Commands;

namespace Natten.Cli;

/// <summary>
/// The <c>natten</c> tool in-process: dispatches a command and turns every failure into one line
/// <c>natten: message</c> on stderr and an exit code (<see cref="ExitCodes"/>); never a stack trace.
/// </summary>
internal static class CliApp
{
    public static string UsageText =>
        """
        Usage: natten <command> [options]

        Neighborhood attention (NATTEN semantics) from the command line.

        Commands:
          run       run attention on .npy files (natten run --help)
          profile   time the backends on a random problem, search fused tile shapes, plot speedups (natten profile --help)
          simulate  analytic model of the fused kernel: KV tiles visited, masking, speedup bound (natten simulate --help)
          gen       seeded random q/k/v/dO .npy files in NATTEN layout (natten gen --help)
          selftest  every backend on this machine's accelerator against the double Reference (natten selftest --help)
          ptx       compile every kernel to PTX without a GPU; local-memory and shared-memory report (natten ptx --help)

        Options:
          --help, -h    show this help (also after a command)
          --version     show the version
        """;

    public static string Version
        => typeof(CliApp).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
        ?? typeof(CliApp).Assembly.GetName().Version?.ToString()
        ?? "unknown";

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(stdout);
        ArgumentNullException.ThrowIfNull(stderr);
        try
        {
            return Dispatch(args, stdout, stderr);
        }
        catch (CliException ex)
        {
            return Fail(stderr, ex.Message, ex.ExitCode);
        }
        catch (ArgumentException ex)
        {
            // The library's validation: the request is invalid, not the files.
            return Fail(stderr, CleanArgumentMessage(ex), ExitCodes.Usage);
        }
        catch (NotSupportedException ex)
        {
            return Fail(stderr, ex.Message, ExitCodes.Usage);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            return Fail(stderr, ex.Message, ExitCodes.Io);
        }
        catch (OutOfMemoryException)
        {
            return Fail(stderr, "out of memory: the problem is too large for this machine.", ExitCodes.Io);
        }
#pragma warning disable CA1031 // The tool's contract: any failure is one line on stderr, never a stack trace.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            return Fail(stderr, $"unexpected error ({ex.GetType().Name}): {ex.Message}", ExitCodes.Io);
        }
    }

    private static int Dispatch(string[] args, TextWriter stdout, TextWriter stderr)
    {
        if (args.Length == 0)
        {
            throw CliException.Usage("no command given; commands: run, profile, simulate, gen, selftest, ptx (see 'natten --help').");
        }

        switch (args[0])
        {
            case "--help" or "-h" or "help":
                stdout.WriteLine(UsageText);
                return ExitCodes.Success;
            case "--version":
                stdout.WriteLine($"natten {Version}");
                return ExitCodes.Success;
            case "run":
                return RunCommand.Execute(new ArgumentReader(args[1..]), stdout);
            case "profile":
                return ProfileCommand.Execute(new ArgumentReader(args[1..]), stdout, stderr);
            case "simulate":
                return SimulateCommand.Execute(new ArgumentReader(args[1..]), stdout);
            case "gen":
                return GenCommand.Execute(new ArgumentReader(args[1..]), stdout);
            case "selftest":
                return SelfTestCommand.Execute(new ArgumentReader(args[1..]), stdout);
            case "ptx":
                return PtxCommand.Execute(new ArgumentReader(args[1..]), stdout);
            default:
                throw CliException.Usage(
                    args[0].StartsWith('-')
                        ? $"'{args[0]}' is not a known option; give a command first: run, profile, simulate, gen, selftest, ptx (see 'natten --help')."
                        : $"unknown command '{args[0]}'; commands: run, profile, simulate, gen, selftest, ptx (see 'natten --help').");
        }
    }

    private static int Fail(TextWriter stderr, string message, int exitCode)
    {
        stderr.WriteLine($"natten: {OneLine(message)}");
        return exitCode;
    }

    /// <summary>
    /// The library's message without .NET's " (Parameter 'x')" suffix, with option fields spelled as
    /// the command line spells them (<c>options.KernelSize</c> becomes <c>--kernel-size</c>).
    /// </summary>
    internal static string CleanArgumentMessage(ArgumentException ex)
    {
        var message = ex.Message;
        var suffix = $" (Parameter '{ex.ParamName}')";
        if (ex.ParamName is not null && message.EndsWith(suffix, StringComparison.Ordinal))
        {
            message = message[..^suffix.Length];
        }

        return message
            .Replace("options.KernelSize", "--kernel-size", StringComparison.Ordinal)
            .Replace("options.Stride", "--stride", StringComparison.Ordinal)
            .Replace("options.Dilation", "--dilation", StringComparison.Ordinal)
            .Replace("options.Causal", "--causal", StringComparison.Ordinal)
            .Replace("options.Scale", "--scale", StringComparison.Ordinal)
            .Replace("options.Tiles.Query", "--tiles (query tile)", StringComparison.Ordinal)
            .Replace("options.Tiles.KeyValue", "--tiles (KV sub-tile)", StringComparison.Ordinal)
            .Replace("options.Backend", "--backend", StringComparison.Ordinal);
    }

    /// <summary>Newlines and runs of whitespace collapse to single spaces.</summary>
    internal static string OneLine(string message)
        => string.Join(' ', message.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries));
}
