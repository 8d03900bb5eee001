using Natten.Kernels.Runtime;

namespace Natten.Tests.Kernels;

/// <summary>
/// Every kernel the backends load compiles through ILGPU's PTX backend (sm_80) — on any machine,
/// without a GPU — so CUDA code-generation failures (unsupported constructs, asm operand types,
/// structs holding views) show up in CI rather than on the first GPU run. The driver JIT (ptxas)
/// is not run here.
/// </summary>
[TestFixture]
[Category("Ptx")]
public sealed class PtxCompilationTests
{
    private static IEnumerable<TestCaseData> Entries()
        => KernelCatalog.All.Select((e, i) => new TestCaseData(i).SetArgDisplayNames(e.Name));

    [TestCaseSource(nameof(Entries))]
    public void Compiles_to_ptx(int index)
    {
        var entry = KernelCatalog.All[index];
        var ptx = entry.Grouped ? PtxInspection.CompileGrouped(entry.Method) : PtxInspection.CompileAutoGrouped(entry.Method);
        var report = PtxInspection.Inspect(ptx);
        if (Environment.GetEnvironmentVariable("NATTEN_PTX_DUMP") is { Length: > 0 } dump)
        {
            // For reading the PTX (or running ptxas on a GPU machine): NATTEN_PTX_DUMP=<folder>.
            Directory.CreateDirectory(dump);
            var file = string.Concat(entry.Name.Select(c => char.IsLetterOrDigit(c) ? c : '_')) + ".ptx";
            File.WriteAllText(Path.Combine(dump, file), ptx);
        }

        Assert.That(ptx, Does.Contain(".entry"), "the module declares a kernel entry");
        Assert.That(ptx, Does.Contain(".target sm_80"));
        if (entry.TensorCore)
        {
            Assert.That(report.MmaInstructions, Is.GreaterThan(0), "the tensor-core kernel emits mma.sync");
        }

        if (entry.RegisterResident)
        {
            // Loop-indexed per-thread arrays would live in local memory; the generated kernels index fragments by constants only.
            Assert.That(report.LocalArrays, Is.Empty, "a register-resident kernel declares no run-time-indexed local array");
        }

        if (ptx.Contains("ldmatrix", StringComparison.Ordinal) || ptx.Contains("cp.async", StringComparison.Ordinal))
        {
            // ldmatrix and cp.async need 16-byte aligned shared addresses. ILGPU declares dynamic shared memory with .align 4
            // or 8 and it is placed after the static shared memory: with static bytes a multiple of 16 it starts 16-byte
            // aligned (natten selftest checks the placement on a GPU: KernelSelfChecks.AddressSpaces).
            Assert.That(report.StaticSharedBytes % 16, Is.Zero, "static shared memory ends on a 16-byte boundary (ldmatrix rows in the dynamic region stay aligned)");
        }

        // The generated kernels' staging: 16-byte cp.async with zero fill and group waits where it is AsyncStaging, none otherwise.
        var cpAsync = CountOf(ptx, "cp.async.cg.shared.global");
        if (entry.Name.Contains("AsyncStaging", StringComparison.Ordinal))
        {
            Assert.That(cpAsync, Is.GreaterThan(0), "asynchronous staging emits cp.async.cg.shared.global");
            Assert.That(ptx, Does.Contain("cp.async.commit_group;").And.Contain("cp.async.wait_group 1;"));

            // The generated NA kernels stage two row sets per step, each from the prologue and the loop: the forward and dQ K and V
            // for neighborhood and additional sub-tiles (8 copies), dK/dV Q and dO (4).
            if (entry.Name.StartsWith("FnaTensorCoreKernelD", StringComparison.Ordinal) || entry.Name.StartsWith("FnaTensorCoreQueryGradKernelD", StringComparison.Ordinal))
            {
                Assert.That(cpAsync, Is.EqualTo(8), "K and V × neighborhood / additional × prologue / loop");
            }
            else if (entry.Name.StartsWith("FnaTensorCoreKeyValueGradKernelD", StringComparison.Ordinal))
            {
                Assert.That(cpAsync, Is.EqualTo(4), "Q and dO × prologue / loop");
            }
        }
        else if (entry.Name.Contains("ElementStaging", StringComparison.Ordinal))
        {
            Assert.That(cpAsync, Is.Zero, "the element staging issues no cp.async");
        }

        TestContext.Out.WriteLine(
            $"{entry.Name}: cp.async {cpAsync}, {report.Instructions} instructions, {report.MmaInstructions} mma, shared {report.StaticSharedBytes} B, "
            + $"local arrays [{string.Join(", ", report.LocalArrays)}] B, ld.local {report.LocalLoads}, st.local {report.LocalStores}");
    }

    private static int CountOf(string text, string what)
    {
        var count = 0;
        for (var at = text.IndexOf(what, StringComparison.Ordinal); at >= 0; at = text.IndexOf(what, at + what.Length, StringComparison.Ordinal))
        {
            count++;
        }

        return count;
    }

    /// <summary>
    /// The generated block-sparse forwards are in the catalog with the cp.async staging (the default) for every head dim and with the
    /// element staging once, so <see cref="Compiles_to_ptx"/> checks both; one variant's PTX: 4 copies (K and V, prologue and loop),
    /// commits and <c>wait_group 1</c>.
    /// </summary>
    [Test]
    public void Block_sparse_register_forwards_stage_with_cp_async()
    {
        var names = KernelCatalog.All.Select(e => e.Name).Where(n => n.StartsWith("BlockSparseTensorCoreKernelD", StringComparison.Ordinal)).ToList();
        foreach (var d in Natten.Kernels.BlockSparse.Generated.BlockSparseRegisterKernels.HeadDims)
        {
            Assert.That(names.Count(n => n.StartsWith($"BlockSparseTensorCoreKernelD{d}.", StringComparison.Ordinal) && n.Contains("AsyncStaging", StringComparison.Ordinal)), Is.GreaterThan(0), $"D{d}");
        }

        Assert.That(names.Count(n => n.Contains("ElementStaging", StringComparison.Ordinal)), Is.EqualTo(1));
        var entry = KernelCatalog.All.First(e => e.Name == "BlockSparseTensorCoreKernelD32.Forward<Fp16Format, MatrixLoads, AsyncStaging, AllowAll, NoBias>");
        var ptx = PtxInspection.CompileGrouped(entry.Method);
        Assert.That(CountOf(ptx, "cp.async.cg.shared.global"), Is.EqualTo(4), "K and V copies, in the prologue and in the loop");
        // ILGPU places the loop's commit and wait on both paths of `ahead < steps` (3 commits, 2 waits in the PTX, as in the NA forward).
        Assert.That(CountOf(ptx, "cp.async.commit_group;"), Is.GreaterThanOrEqualTo(2), "prologue and loop");
        Assert.That(CountOf(ptx, "cp.async.wait_group 1;"), Is.GreaterThanOrEqualTo(1));
        Assert.That(ptx, Does.Not.Contain("cp.async.wait_group 0;"));
    }

    [Test]
    public void Inspect_reads_depots_and_shared_arrays()
    {
        const string ptx = """
            .visible .entry K(
            )
            {
            	.local .align 4 .b8 __local_depot0[4];
            	.local .align 4 .b8 __local_depot1[128];
            	.shared .align 4 .b8 __shared_alloca0[256];
            	ld.local.f32	%f1, [%rd1];
            	st.local.f32	[%rd1], %f1;
            	mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%f0, %f1, %f2, %f3}, {%r0, %r1, %r2, %r3}, {%r4, %r5}, {%f0, %f1, %f2, %f3};
            }
            """;
        var report = PtxInspection.Inspect(ptx.Replace("\r", string.Empty, StringComparison.Ordinal));
        Assert.That(report.LocalDepots, Is.EqualTo(new[] { 4, 128 }));
        Assert.That(report.LocalArrays, Is.EqualTo(new[] { 128 }));
        Assert.That(report.StaticSharedBytes, Is.EqualTo(256));
        Assert.That(report.LocalLoads, Is.EqualTo(1));
        Assert.That(report.LocalStores, Is.EqualTo(1));
        Assert.That(report.MmaInstructions, Is.EqualTo(1));
    }

    [Test]
    public void Inspect_tells_fixed_offset_copies_from_run_time_indexed_arrays()
    {
        const string ptx = """
            .visible .entry K(
            )
            {
            	.local .align 16 .b8 __local_depot0[16];
            	.local .align 16 .b8 __local_depot1[16];
            	.local .align 4 .b8 __local_depot2[64];
            	mov.b64	%rd1, __local_depot0;
            	mov.b64	%rd2, __local_depot1;
            	mov.b64	%rd3, __local_depot2;
            	st.local.b64	[%rd1], %rd10;
            	st.local.b64	[%rd1+8], 0;
            	ld.local.b64	%rd11, [%rd1];
            	st.local.b64	[%rd2], %rd10;
            	ld.local.b64	%rd12, [%rd2+8];
            	add.s64	%rd13, %rd3, %rd12;
            	ld.local.f32	%f1, [%rd13];
            }
            """;
        var report = PtxInspection.Inspect(ptx.Replace("\r", string.Empty, StringComparison.Ordinal));
        Assert.That(report.LocalDepots, Is.EqualTo(new[] { 16, 16, 64 }));
        Assert.That(report.FixedOffsetDepots, Is.EqualTo(new[] { 16, 16 }), "depots 0 and 1 are only addressed at constant offsets");
        Assert.That(report.LocalArrays, Is.EqualTo(new[] { 64 }), "depot 2's base enters an add: an array indexed at run time");
    }
}
