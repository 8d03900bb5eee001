using Natten.Kernels.Runtime;

namespace Natten.Diagnostics;

/// <summary>What ILGPU's PTX backend emits for one kernel variant (see <see cref="KernelInspection"/>).</summary>
/// <param name="Name">The kernel and its type arguments, e.g. <c>FnaTensorCoreKernel.Forward&lt;Fp16Format&gt;</c>.</param>
/// <param name="TensorCore">Whether the kernel issues <c>mma.sync</c>.</param>
/// <param name="Ptx">The PTX module (sm_80 target).</param>
/// <param name="Instructions">PTX instruction lines.</param>
/// <param name="MmaInstructions"><c>mma.sync</c> instructions in the PTX (static count, not executions).</param>
/// <param name="StaticSharedBytes">Bytes of shared memory declared statically (dynamic shared memory is sized per launch).</param>
/// <param name="LocalArrayBytes">
/// Bytes of per-thread arrays in local memory: run-time-indexed arrays that ptxas cannot promote to registers.
/// The 4- and 8-byte depots ILGPU emits around each inline-asm operand are not counted (ptxas removes them), nor are
/// larger depots addressed only at constant offsets (struct copies, e.g. a view reinterpreted to read its pointer).
/// </param>
/// <param name="LocalLoads"><c>ld.local</c> instructions (including the asm operand copies).</param>
/// <param name="LocalStores"><c>st.local</c> instructions (including the asm operand copies).</param>
public sealed record KernelPtxInfo(
    string Name, bool TensorCore, string Ptx, int Instructions, int MmaInstructions, int StaticSharedBytes, int LocalArrayBytes, int LocalLoads, int LocalStores);

/// <summary>
/// Compiles the library's kernels to PTX on any machine — no GPU or CUDA driver needed — through the same
/// ILGPU context settings the backends use, and reports what the PTX declares. Use it to see whether a
/// kernel keeps its fragments in registers, or to hand the PTX to <c>ptxas -v</c> on a CUDA machine for
/// register and spill counts. The driver's JIT is not run: a kernel that compiles here can still fail on a GPU.
/// </summary>
public static class KernelInspection
{
    /// <summary>Names of every kernel variant the backends can load (fixed order).</summary>
    public static IReadOnlyList<string> KernelNames => KernelCatalog.All.Select(e => e.Name).ToArray();

    /// <summary>Compiles every kernel whose name contains <paramref name="filter"/> (ordinal, case-insensitive; null for all).</summary>
    /// <param name="filter">A substring of <see cref="KernelNames"/>, or null.</param>
    /// <returns>One entry per kernel variant, in catalog order.</returns>
    public static IReadOnlyList<KernelPtxInfo> CompileToPtx(string? filter = null)
    {
        var result = new List<KernelPtxInfo>();
        foreach (var entry in KernelCatalog.All)
        {
            if (filter is not null && !entry.Name.Contains(filter, StringComparison.OrdinalIgnoreCase))
            {
                continue;
            }

            var ptx = entry.Grouped ? PtxInspection.CompileGrouped(entry.Method) : PtxInspection.CompileAutoGrouped(entry.Method);
            var report = PtxInspection.Inspect(ptx);
            result.Add(new KernelPtxInfo(
                entry.Name, entry.TensorCore, ptx, report.Instructions, report.MmaInstructions, report.StaticSharedBytes,
                report.LocalArrayBytes, report.LocalLoads, report.LocalStores));
        }

        return result;
    }
}
