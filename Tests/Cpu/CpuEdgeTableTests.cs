using Natten.Kernels.Cpu;

namespace Natten.Tests.Cpu;

/// <summary>
/// The edge table of docs/SEMANTICS.md (kernel = length, even kernels, dilation with a remainder,
/// stride = kernel with a partial last block, every causal combination, 1D/2D/3D, GQA, D ≠ Dv,
/// additional tokens, custom scale) through the CPU kernels, forward and backward, against the Reference.
/// </summary>
public sealed class CpuEdgeTableTests
{
    public static IEnumerable<TestCaseData> Cases()
    {
        IEnumerable<CpuCase> All()
        {
            yield return new CpuCase("border shift", [7], [3]);
            yield return new CpuCase("even kernel", [8], [4]);
            yield return new CpuCase("stride = kernel, remainder", [8], [3]) { Stride = [3] };
            yield return new CpuCase("stride leaders", [9], [3]) { Stride = [2] };
            yield return new CpuCase("stride with even kernel", [8], [4]) { Stride = [2] };
            yield return new CpuCase("dilation with remainder", [7], [2]) { Dilation = [2] };
            yield return new CpuCase("dilation = n / K", [9], [3]) { Dilation = [3] };
            yield return new CpuCase("causal truncation", [5], [3]) { Causal = [true] };
            yield return new CpuCase("causal stride", [6], [3]) { Stride = [2], Causal = [true] };
            yield return new CpuCase("causal dilation", [7], [2]) { Dilation = [3], Causal = [true] };
            yield return new CpuCase("kernel = length (full attention)", [5], [5]);
            yield return new CpuCase("causal kernel = length (causal attention)", [5], [5]) { Causal = [true] };
            yield return new CpuCase("kernel = length, 2D", [6, 5], [6, 5]);
            yield return new CpuCase("kernel = length - 1, 3D", [4, 5, 6], [3, 4, 5]);
            yield return new CpuCase("2D causal x", [6, 7], [3, 4]) { Causal = [true, false] };
            yield return new CpuCase("2D causal y", [6, 7], [3, 4]) { Causal = [false, true] };
            yield return new CpuCase("2D causal both", [6, 7], [3, 4]) { Causal = [true, true] };
            yield return new CpuCase("3D causal mix", [4, 5, 6], [2, 3, 4]) { Causal = [true, false, true] };
            yield return new CpuCase("2D blocked", [9, 8], [3, 4]) { Stride = [3, 4] };
            yield return new CpuCase("2D stride and dilation", [11, 9], [3, 2]) { Stride = [2, 2], Dilation = [3, 2] };
            yield return new CpuCase("3D dilation with remainder", [5, 7, 9], [2, 3, 2]) { Dilation = [2, 2, 4] };
            yield return new CpuCase("GQA, D != Dv", [10], [4]) { Heads = 6, KvHeads = 2, HeadDim = 12, ValueDim = 5 };
            yield return new CpuCase("MQA, 2D", [5, 6], [3, 3]) { Heads = 4, KvHeads = 1, HeadDim = 3, ValueDim = 17 };
            yield return new CpuCase("additional tokens", [9], [3]) { Additional = 3 };
            yield return new CpuCase("additional tokens, 2D causal", [5, 6], [2, 3]) { Causal = [true, false], Additional = 20, HeadDim = 16 };
            yield return new CpuCase("custom scale", [8, 8], [5, 3]) { Scale = 0.9 };
            yield return new CpuCase("batch 3", [7, 6], [3, 3]) { Batch = 3, Heads = 2, KvHeads = 2 };
        }

        // Every vector width: 512 and 256 bits where accelerated, 128 bits as the portable fallback.
        return from c in All()
               from bits in new[] { 512, 256, 128 }
               select new TestCaseData(c, bits).SetName($"{{m}}({c.Name}, {bits}-bit)");
    }

    [TestCaseSource(nameof(Cases))]
    public void ForwardMatchesReference(CpuCase problem, int vectorBits)
        => problem.AssertForward(seed: 3, new CpuOptions { VectorBits = vectorBits });

    [TestCaseSource(nameof(Cases))]
    public void BackwardMatchesReference(CpuCase problem, int vectorBits)
        => problem.AssertBackward(seed: 4, new CpuOptions { VectorBits = vectorBits });
}
