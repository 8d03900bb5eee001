using BenchmarkDotNet.Running;

namespace Natten.Benchmarks;

/// <summary>
/// Entry point: pick suites and jobs on the command line, e.g.
/// <c>dotnet run -c Release --project Perf/NATTEN.Benchmarks -- --filter *Reference* --job short</c>.
/// </summary>
internal static class Program
{
    private static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
