using System.Text;
using Natten.Codegen;

namespace Natten.Tests.Kernels;

/// <summary>The checked-in generated kernels are exactly what the generator writes now (they cannot drift from it).</summary>
public sealed class GeneratedKernelTests
{
    public static IEnumerable<TestCaseData> Variants()
        => FnaRegisterKernelGenerator.Variants.Select(v => new TestCaseData(v.HeadDim, v.KeyChunk).SetName($"{{m}}(D{v.HeadDim})"));

    [TestCaseSource(nameof(Variants))]
    public void CheckedInFileMatchesTheGenerator(int headDim, int keyChunk)
    {
        var path = Path.Combine(RepositoryRoot(), FnaRegisterKernelGenerator.RelativePath(headDim));
        Assert.That(File.Exists(path), Is.True, $"{path} is missing: run the generator (Codegen)");
        var expected = FnaRegisterKernelGenerator.Generate(headDim, keyChunk);
        var actual = File.ReadAllBytes(path);
        Assert.That(
            actual, Is.EqualTo(new UTF8Encoding(false).GetBytes(expected)),
            $"{FnaRegisterKernelGenerator.RelativePath(headDim)} differs from the generator's output: run `dotnet run -c Release --project Codegen -- .`");
    }

    public static IEnumerable<TestCaseData> BackwardVariants()
        => FnaRegisterBackwardGenerator.Variants.Select(d => new TestCaseData(d).SetName($"{{m}}(D{d})"));

    [TestCaseSource(nameof(BackwardVariants))]
    public void CheckedInQueryGradFileMatchesTheGenerator(int headDim)
    {
        var path = Path.Combine(RepositoryRoot(), FnaRegisterBackwardGenerator.RelativePath(headDim));
        Assert.That(File.Exists(path), Is.True, $"{path} is missing: run the generator (Codegen)");
        var expected = FnaRegisterBackwardGenerator.Generate(headDim);
        var actual = File.ReadAllBytes(path);
        Assert.That(
            actual, Is.EqualTo(new UTF8Encoding(false).GetBytes(expected)),
            $"{FnaRegisterBackwardGenerator.RelativePath(headDim)} differs from the generator's output: run `dotnet run -c Release --project Codegen -- .`");
    }

    [TestCaseSource(nameof(BackwardVariants))]
    public void CheckedInKeyValueGradFileMatchesTheGenerator(int headDim)
    {
        var path = Path.Combine(RepositoryRoot(), FnaRegisterBackwardGenerator.KeyValueRelativePath(headDim));
        Assert.That(File.Exists(path), Is.True, $"{path} is missing: run the generator (Codegen)");
        var expected = FnaRegisterBackwardGenerator.GenerateKeyValue(headDim);
        var actual = File.ReadAllBytes(path);
        Assert.That(
            actual, Is.EqualTo(new UTF8Encoding(false).GetBytes(expected)),
            $"{FnaRegisterBackwardGenerator.KeyValueRelativePath(headDim)} differs from the generator's output: run `dotnet run -c Release --project Codegen -- .`");
    }

    [Test]
    public void CheckedInRegistryMatchesTheGenerator()
    {
        var path = Path.Combine(RepositoryRoot(), FnaRegisterRegistryGenerator.RelativePath);
        Assert.That(File.Exists(path), Is.True, $"{path} is missing: run the generator (Codegen)");
        Assert.That(
            File.ReadAllBytes(path), Is.EqualTo(new UTF8Encoding(false).GetBytes(FnaRegisterRegistryGenerator.Generate())),
            $"{FnaRegisterRegistryGenerator.RelativePath} differs from the generator's output: run `dotnet run -c Release --project Codegen -- .`");
    }

    public static IEnumerable<TestCaseData> BlockSparseVariants()
        => BlockSparseRegisterGenerator.Variants.Select(v => new TestCaseData(v.HeadDim, v.KeyChunk).SetName($"{{m}}(D{v.HeadDim})"));

    [TestCaseSource(nameof(BlockSparseVariants))]
    public void CheckedInBlockSparseFileMatchesTheGenerator(int headDim, int keyChunk)
    {
        var path = Path.Combine(RepositoryRoot(), BlockSparseRegisterGenerator.RelativePath(headDim));
        Assert.That(File.Exists(path), Is.True, $"{path} is missing: run the generator (Codegen)");
        Assert.That(
            File.ReadAllBytes(path), Is.EqualTo(new UTF8Encoding(false).GetBytes(BlockSparseRegisterGenerator.Generate(headDim, keyChunk))),
            $"{BlockSparseRegisterGenerator.RelativePath(headDim)} differs from the generator's output: run `dotnet run -c Release --project Codegen -- .`");
    }

    [Test]
    public void CheckedInBlockSparseRegistryMatchesTheGenerator()
    {
        var path = Path.Combine(RepositoryRoot(), BlockSparseRegisterRegistryGenerator.RelativePath);
        Assert.That(File.Exists(path), Is.True, $"{path} is missing: run the generator (Codegen)");
        Assert.That(
            File.ReadAllBytes(path), Is.EqualTo(new UTF8Encoding(false).GetBytes(BlockSparseRegisterRegistryGenerator.Generate())),
            $"{BlockSparseRegisterRegistryGenerator.RelativePath} differs from the generator's output: run `dotnet run -c Release --project Codegen -- .`");
    }

    [Test]
    public void BlockSparseRegistryListsEveryGeneratedHeadDimension()
    {
        var variants = BlockSparseRegisterGenerator.Variants;
        Assert.That(Natten.Kernels.BlockSparse.Generated.BlockSparseRegisterKernels.HeadDims, Is.EqualTo(variants.Select(v => v.HeadDim).ToArray()));
        foreach (var (d, chunk) in variants)
        {
            Assert.That(Natten.Kernels.BlockSparse.Generated.BlockSparseRegisterKernels.RowStride(d), Is.EqualTo(d + 8), $"D{d}");
            Assert.That(Natten.Kernels.BlockSparse.Generated.BlockSparseRegisterKernels.KeyChunk(d), Is.EqualTo(chunk), $"D{d}");
            var text = BlockSparseRegisterGenerator.Generate(d, chunk);
            Assert.That(text, Does.Not.Contain("LocalMemory"), $"D{d}");
            Assert.That(text, Does.Not.Contain("stackalloc"), $"D{d}");
            Assert.That(text, Does.Contain($"o.N{(d / 8) - 1}C3"), $"D{d}: the last output register is named");
            Assert.That(text, Does.Contain($"s.N{(chunk / 8) - 1}C3"), $"D{d}: the last score register is named");
        }

        Assert.That(Natten.Kernels.BlockSparse.Generated.BlockSparseRegisterKernels.Supports(48), Is.False);
    }

    [Test]
    public void RegistryListsEveryGeneratedHeadDimension()
    {
        var dims = FnaRegisterKernelGenerator.Variants.Select(v => v.HeadDim).ToArray();
        Assert.That(Natten.Kernels.Fused.Generated.FnaRegisterKernels.HeadDims, Is.EqualTo(dims));
        Assert.That(FnaRegisterBackwardGenerator.Variants, Is.EqualTo(dims), "forward and backward are generated for the same head dimensions");
        foreach (var d in dims)
        {
            Assert.That(Natten.Kernels.Fused.Generated.FnaRegisterKernels.Supports(d), Is.True, $"D{d}");
            Assert.That(Natten.Kernels.Fused.Generated.FnaRegisterKernels.RowStride(d), Is.EqualTo(d + 8), $"D{d}");
        }

        Assert.That(Natten.Kernels.Fused.Generated.FnaRegisterKernels.Supports(48), Is.False);
        Assert.That(Natten.Kernels.Fused.Generated.FnaRegisterKernels.Supports(256), Is.False);
    }

    [Test]
    public void GeneratedQueryGradIndexesFragmentsByConstantsOnly()
    {
        foreach (var d in FnaRegisterBackwardGenerator.Variants)
        {
            var text = FnaRegisterBackwardGenerator.Generate(d);
            Assert.That(text, Does.Not.Contain("LocalMemory"), $"D{d}");
            Assert.That(text, Does.Not.Contain("stackalloc"), $"D{d}");
            Assert.That(text, Does.Contain($"dq.N{(d / 8) - 1}C3"), $"D{d}: the last dQ register is named");
            Assert.That(text, Does.Contain($"dO.K{(d / 16) - 1}A3"), $"D{d}: the last dO fragment register is named");
            var keyValue = FnaRegisterBackwardGenerator.GenerateKeyValue(d);
            Assert.That(keyValue, Does.Not.Contain("LocalMemory"), $"D{d} dK/dV");
            Assert.That(keyValue, Does.Not.Contain("stackalloc"), $"D{d} dK/dV");
            Assert.That(keyValue, Does.Contain($"dk.N{(d / 8) - 1}C3"), $"D{d}: the last dK register is named");
            Assert.That(keyValue, Does.Contain($"dv.N{(d / 8) - 1}C3"), $"D{d}: the last dV register is named");
        }
    }

    [Test]
    public void GeneratedCodeIndexesFragmentsByConstantsOnly()
    {
        // The point of generating: no fragment array indexed at run time. Every fragment access names a field.
        foreach (var (d, chunk) in FnaRegisterKernelGenerator.Variants)
        {
            var text = FnaRegisterKernelGenerator.Generate(d, chunk);
            Assert.That(text, Does.Not.Contain("LocalMemory"), $"D{d}");
            Assert.That(text, Does.Not.Contain("stackalloc"), $"D{d}");
            Assert.That(text, Does.Contain($"o.N{(d / 8) - 1}C3"), $"D{d}: the last output register is named");
            Assert.That(text, Does.Contain($"s.N{(chunk / 8) - 1}C3"), $"D{d}: the last score register is named");
        }
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "NATTEN.Net.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("NATTEN.Net.sln not found above the test directory");
    }
}
