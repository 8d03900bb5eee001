namespace Natten.Cli;

/// <summary>
/// A failure the tool reports as one line (<c>natten: message</c>) and exits with <see cref="ExitCode"/>.
/// </summary>
internal sealed class CliException : Exception
{
    public CliException(string message, int exitCode = ExitCodes.Usage)
        : base(message) => ExitCode = exitCode;

    public CliException(string message, int exitCode, Exception innerException)
        : base(message, innerException) => ExitCode = exitCode;

    public int ExitCode { get; }

    /// <summary>A bad command line or an invalid problem (exit code 2).</summary>
    public static CliException Usage(string message) => new(message, ExitCodes.Usage);

    /// <summary>A file that cannot be read or written, or is not a valid .npy (exit code 1).</summary>
    public static CliException Io(string message, Exception? inner = null)
        => inner is null ? new(message, ExitCodes.Io) : new(message, ExitCodes.Io, inner);
}

/// <summary>Process exit codes.</summary>
internal static class ExitCodes
{
    public const int Success = 0;
    public const int Io = 1;
    public const int Usage = 2;
}
