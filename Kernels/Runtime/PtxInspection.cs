using System.Reflection;
using System.Text.RegularExpressions;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Natten.Kernels.Runtime;

/// <summary>
/// Compiles kernels to PTX without a GPU, with the same context settings the runtime uses (O2,
/// algorithms), and reads what the PTX says about memory: local arrays (loop-indexed per-thread
/// arrays that ptxas can only keep in local memory), static shared memory and the register
/// declarations. This is ILGPU's own PTX backend, so a kernel that compiles here passes ILGPU's
/// CUDA code generation; the driver's JIT (ptxas) still runs only on a GPU.
/// </summary>
internal static partial class PtxInspection
{
    /// <summary>The architecture ILGPU targets at most (it caps <c>.target</c> at sm_80).</summary>
    public static CudaArchitecture Architecture => CudaArchitecture.SM_80;

    private static readonly Lazy<PTXBackend> Backend = new(
        () => new PTXBackend(DeviceRuntime.Context, Architecture, CudaInstructionSet.ISA_80, nvvmAPI: null!),
        LazyThreadSafetyMode.ExecutionAndPublication);

    private static readonly object Gate = new();

    /// <summary>PTX of an explicitly grouped kernel (<c>LoadKernel</c>).</summary>
    public static string CompileGrouped(MethodInfo kernel)
        => Compile(EntryPointDescription.FromExplicitlyGroupedKernel(kernel));

    /// <summary>PTX of an implicitly grouped kernel (<c>LoadAutoGroupedKernel</c>).</summary>
    public static string CompileAutoGrouped(MethodInfo kernel)
        => Compile(EntryPointDescription.FromImplicitlyGroupedKernel(kernel));

    private static string Compile(EntryPointDescription entry)
    {
        // The backend is not documented as thread-safe; compiles are rare (tests, the CLI).
        lock (Gate)
        {
            var specialization = KernelSpecialization.Empty;
            var compiled = (PTXCompiledKernel)Backend.Value.Compile(entry, specialization);
            return compiled.PTXAssembly;
        }
    }

    /// <summary>What one kernel's PTX declares.</summary>
    /// <param name="LocalDepots">Byte sizes of every <c>.local</c> depot.</param>
    /// <param name="StaticSharedBytes">Bytes of <c>.shared</c> arrays declared in the kernel.</param>
    /// <param name="Instructions">Instruction lines (a size indication).</param>
    /// <param name="LocalLoads">Count of <c>ld.local</c> instructions.</param>
    /// <param name="LocalStores">Count of <c>st.local</c> instructions.</param>
    /// <param name="MmaInstructions">Count of <c>mma.sync</c> instructions.</param>
    /// <param name="FixedOffsetDepots">
    /// Byte sizes of the depots larger than a scalar whose base address is only ever used at constant offsets
    /// (<c>[%rd]</c>, <c>[%rd+8]</c>): copies of a small struct (e.g. a view reinterpreted to read its pointer), not
    /// arrays; ptxas can keep them in registers (check with <c>ptxas -v</c> on a GPU machine).
    /// </param>
    public sealed record Report(
        IReadOnlyList<int> LocalDepots, int StaticSharedBytes, int Instructions, int LocalLoads, int LocalStores, int MmaInstructions,
        IReadOnlyList<int> FixedOffsetDepots)
    {
        /// <summary>
        /// The size from which a depot can be an array. ILGPU spills each inline-asm operand into its own
        /// 4- or 8-byte depot around the <c>asm</c> block (ptxas removes those copies, as measured on an H100).
        /// </summary>
        public const int ArrayThresholdBytes = 8;

        /// <summary>
        /// Depots larger than a scalar that are indexed at run time (their base address enters address arithmetic, or
        /// is not visible): per-thread arrays that live in local memory.
        /// </summary>
        public IReadOnlyList<int> LocalArrays { get; } = Arrays(LocalDepots, FixedOffsetDepots);

        /// <summary>Total bytes of <see cref="LocalArrays"/>.</summary>
        public int LocalArrayBytes => LocalArrays.Sum();

        private static int[] Arrays(IReadOnlyList<int> depots, IReadOnlyList<int> fixedOffsets)
        {
            var remaining = fixedOffsets.ToList();
            return depots.Where(size => size > ArrayThresholdBytes && !remaining.Remove(size)).ToArray();
        }
    }

    /// <summary>Reads a PTX module's declarations.</summary>
    public static Report Inspect(string ptx)
    {
        var depots = LocalDepot().Matches(ptx)
            .Select(m => (Name: m.Groups[1].Value, Size: int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture)))
            .ToArray();
        var shared = SharedArray().Matches(ptx).Sum(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
        var lines = ptx.Split('\n');
        var instructions = lines.Count(l => l.StartsWith('\t') && l.Length > 1 && char.IsLetter(l[1]) && !l.TrimStart().StartsWith(".", StringComparison.Ordinal));
        var loads = lines.Count(l => l.Contains("ld.local", StringComparison.Ordinal));
        var stores = lines.Count(l => l.Contains("st.local", StringComparison.Ordinal));
        var mma = lines.Count(l => l.Contains("mma.sync", StringComparison.Ordinal));
        var unproven = RuntimeIndexedDepots(ptx, depots.Select(d => d.Name).ToArray());
        var fixedOffsets = depots.Where(d => d.Size > Report.ArrayThresholdBytes && !unproven.Contains(d.Name)).Select(d => d.Size).ToArray();
        return new Report(depots.Select(d => d.Size).ToArray(), shared, instructions, loads, stores, mma, fixedOffsets);
    }

    /// <summary>
    /// The depots not proven to be used at constant offsets only: a depot is proven when its address is moved into base
    /// registers (<c>mov.b64 %rdN, depot;</c>) and every other use of those registers is an address <c>[%rdN]</c> or
    /// <c>[%rdN+c]</c>. One pass over the register references.
    /// </summary>
    private static HashSet<string> RuntimeIndexedDepots(string ptx, IReadOnlyList<string> depots)
    {
        var owner = new Dictionary<string, string>(StringComparer.Ordinal);
        var unproven = new HashSet<string>(depots, StringComparer.Ordinal);
        foreach (Match m in DepotBase().Matches(ptx))
        {
            owner[m.Groups[1].Value] = m.Groups[2].Value;
            unproven.Remove(m.Groups[2].Value);
        }

        foreach (var depot in depots)
        {
            if (ptx.Contains($"[{depot}", StringComparison.Ordinal))
            {
                unproven.Add(depot);
            }
        }

        foreach (Match m in RegisterUse().Matches(ptx))
        {
            if (!owner.TryGetValue(m.Groups[2].Value, out var depot))
            {
                continue;
            }

            var address = m.Groups[1].Success && m.Groups[3].Success;
            var definition = m.Groups[4].Success;
            if (!address && !definition)
            {
                unproven.Add(depot);
            }
        }

        return unproven;
    }

    [GeneratedRegex(@"mov\.[bu]64\s+(%rd\d+),\s*(__local_depot\d+);")]
    private static partial Regex DepotBase();

    /// <summary>Every %rd register reference: group 1 '[' before, 2 the register, 3 ']' or '+c]' after, 4 a following ", __local_depot" (its definition).</summary>
    [GeneratedRegex(@"(\[)?(%rd\d+)(?!\d)(\+\d+\]|\])?(,\s*__local_depot\d+;)?")]
    private static partial Regex RegisterUse();

    [GeneratedRegex(@"\.local\s+\.align\s+\d+\s+\.b8\s+(\w+)\[(\d+)\]")]
    private static partial Regex LocalDepot();

    [GeneratedRegex(@"\.shared\s+\.align\s+\d+\s+\.b8\s+\w+\[(\d+)\]")]
    private static partial Regex SharedArray();
}
