using Natten.Kernels.Cpu;

namespace Natten.Tests.Cpu;

/// <summary>
/// Shapes that stress the tiling: awkward axis lengths (2, 7, 97, 130), kernels near the axis length,
/// dilation with a remainder, strides, head dims off the vector width, and explicit small tiles so that
/// tiles, 8-row blocks and runs end in every possible place.
/// </summary>
public sealed class CpuTileBoundaryTests
{
    public static IEnumerable<TestCaseData> Cases()
    {
        IEnumerable<(CpuCase Case, int[]? Tile)> All()
        {
            yield return (new CpuCase("n = 2, K = 2", [2], [2]) { HeadDim = 3, ValueDim = 5 }, null);
            yield return (new CpuCase("n = 7, K = 7", [7], [7]) { HeadDim = 17, ValueDim = 33 }, [1, 1, 8]);
            yield return (new CpuCase("n = 97, K = 96", [97], [96]) { HeadDim = 24, ValueDim = 40 }, [1, 1, 16]);
            yield return (new CpuCase("n = 97, K = 31, stride 5", [97], [31]) { Stride = [5], HeadDim = 40, ValueDim = 24 }, [1, 1, 24]);
            yield return (new CpuCase("n = 130, K = 17, dilation 3", [130], [17]) { Dilation = [3], HeadDim = 64, ValueDim = 64 }, null);
            yield return (new CpuCase("n = 130, causal K = 33, stride 4", [130], [33]) { Stride = [4], Causal = [true], Additional = 5 }, [1, 1, 40]);
            yield return (new CpuCase("97 x 7", [97, 7], [7, 3]) { HeadDim = 32, ValueDim = 16 }, [1, 3, 8]);
            yield return (new CpuCase("7 x 97", [7, 97], [3, 7]) { HeadDim = 9, ValueDim = 48 }, null);
            yield return (new CpuCase("13 x 17, dilation 2 x 3", [13, 17], [5, 5]) { Dilation = [2, 3], Stride = [2, 1] }, [1, 2, 8]);
            yield return (new CpuCase("13 x 17, kernel = length", [13, 17], [13, 17]) { Causal = [false, true] }, [1, 4, 16]);
            yield return (new CpuCase("5 x 7 x 9", [5, 7, 9], [3, 5, 7]) { Heads = 3, KvHeads = 3, HeadDim = 16, ValueDim = 16 }, [2, 2, 8]);
            yield return (new CpuCase("5 x 7 x 9 causal, strides", [5, 7, 9], [5, 4, 3]) { Causal = [true, true, false], Stride = [2, 3, 3] }, null);
            yield return (new CpuCase("6 x 6 x 21, dilation", [6, 6, 21], [2, 3, 5]) { Dilation = [3, 2, 4], Additional = 2 }, [1, 1, 8]);
        }

        return All().Select(c => new TestCaseData(c.Case, c.Tile).SetName($"{{m}}({c.Case.Name}, tile {(c.Tile is null ? "auto" : string.Join('x', c.Tile))})"));
    }

    [TestCaseSource(nameof(Cases))]
    public void ForwardMatchesReference(CpuCase problem, int[]? tile) => problem.AssertForward(seed: 11, new CpuOptions { TileExtent = tile });

    [TestCaseSource(nameof(Cases))]
    public void BackwardMatchesReference(CpuCase problem, int[]? tile) => problem.AssertBackward(seed: 12, new CpuOptions { TileExtent = tile });

    [TestCaseSource(nameof(Cases))]
    public void NarrowVectorsMatchTheReference(CpuCase problem, int[]? tile)
    {
        problem.AssertForward(seed: 13, new CpuOptions { TileExtent = tile, VectorBits = 128 });
        problem.AssertBackward(seed: 14, new CpuOptions { TileExtent = tile, VectorBits = 256 });
    }
}
