using System.Globalization;
using System.Text;
using Natten.Diagnostics;

namespace Natten.Cli.Commands;

/// <summary>
/// <c>natten ptx</c>: compiles the library's kernels to PTX without a GPU (<see cref="KernelInspection"/>),
/// prints what each declares (instructions, mma.sync, static shared memory, local arrays) and optionally
/// writes the PTX files, e.g. for <c>ptxas -v</c> on a CUDA machine.
/// </summary>
internal static class PtxCommand
{
    public static string UsageText =>
        """
        Usage: natten ptx [options]

        Compiles every kernel entry point the backends load, with representative type arguments (each
        storage type, mask and bias struct), through ILGPU's PTX backend (target sm_80; no GPU
        or driver needed) and prints one line per kernel: PTX instructions, mma.sync instructions, static
        shared memory and local-memory arrays (run-time-indexed per-thread arrays; the 4/8-byte copies
        ILGPU makes around inline-asm operands are not counted, ptxas removes them).

        Options:
          --filter TEXT   only kernels whose name contains TEXT (case-insensitive), e.g. TensorCore
          --out DIR       also write each kernel's PTX to DIR/<name>.ptx
          --json          one JSON object per kernel instead of the table
        """;

    public static int Execute(ArgumentReader args, TextWriter stdout)
    {
        if (args.WantsHelp)
        {
            stdout.WriteLine(UsageText);
            return ExitCodes.Success;
        }

        var filter = args.GetString("--filter");
        var outDir = args.GetString("--out");
        var json = args.GetFlag("--json");
        args.ThrowIfUnused("ptx");

        var kernels = KernelInspection.CompileToPtx(filter);
        if (kernels.Count == 0)
        {
            throw CliException.Usage($"no kernel name contains '{filter}'; 'natten ptx' without --filter lists them all.");
        }

        if (outDir is not null)
        {
            Directory.CreateDirectory(outDir);
        }

        if (!json)
        {
            stdout.WriteLine($"{"kernel",-90} {"instr",7} {"mma",4} {"shared B",9} {"local B",8}");
        }

        foreach (var k in kernels)
        {
            if (outDir is not null)
            {
                File.WriteAllText(Path.Combine(outDir, FileName(k.Name) + ".ptx"), k.Ptx);
            }

            stdout.WriteLine(json
                ? string.Create(
                    CultureInfo.InvariantCulture,
                    $"{{\"kernel\":\"{k.Name}\",\"tensorCore\":{(k.TensorCore ? "true" : "false")},\"instructions\":{k.Instructions},\"mma\":{k.MmaInstructions},\"staticSharedBytes\":{k.StaticSharedBytes},\"localArrayBytes\":{k.LocalArrayBytes},\"ldLocal\":{k.LocalLoads},\"stLocal\":{k.LocalStores}}}")
                : string.Create(CultureInfo.InvariantCulture, $"{k.Name,-90} {k.Instructions,7} {k.MmaInstructions,4} {k.StaticSharedBytes,9} {k.LocalArrayBytes,8}"));
        }

        return ExitCodes.Success;
    }

    /// <summary>A file name from a kernel name: letters, digits, '.', '_' and '-' kept, the rest '_'.</summary>
    internal static string FileName(string name)
    {
        var builder = new StringBuilder(name.Length);
        foreach (var c in name)
        {
            builder.Append(char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_' ? c : '_');
        }

        return builder.ToString().Trim('_');
    }
}
