using Natten.Kernels.Common;
using Natten.Kernels.Fused;
using Natten.Kernels.Runtime;

namespace Natten.Validation;

/// <summary>
/// The fused kernel's tile shapes for a validated problem: the shape a call uses, whether a device
/// can run it (the kernel's own <see cref="FnaForward.Check"/>), and the search space the profiler
/// tunes over. Tile extents below 1 and rank mismatches are rejected earlier, by
/// <see cref="ProblemValidator"/>.
/// </summary>
internal static class FusedTileRules
{
    /// <summary>Query tiles hold at least one warp of threads (unless the problem has fewer queries per group).</summary>
    public const int MinQueryTile = 32;

    /// <summary>KV sub-tiles hold at least this many keys (unless the problem has fewer per group).</summary>
    public const int MinKeyTile = 8;

    /// <summary>KV sub-tiles hold at most this many keys.</summary>
    public const int MaxKeyTile = 128;

    /// <summary>
    /// The tile shape a fused call on <paramref name="problem"/> uses (padded to three axes): the requested
    /// one, else for 16-bit storage the tensor-core kernel's default where that kernel runs the problem on
    /// the default accelerator, else the float32-math kernel's default.
    /// </summary>
    public static FnaTileShape TileShape(AttentionProblem problem)
    {
        var p = NaiveBackend.ToParams(problem);
        if (problem.QueryTile is null && problem.ElementType != ElementType.Float32
            && FusedBackend.TensorCoreTile(DeviceRuntime.Default, problem, p) is { } tensorCore)
        {
            return tensorCore;
        }

        return FusedBackend.TileShape(problem, p);
    }

    /// <summary>Why <paramref name="device"/> cannot run the problem's forward with its tile shape, or null (judged on the kernel the call takes).</summary>
    public static string? Check(ComputeDevice device, AttentionProblem problem)
        => FusedBackend.KernelCheck(device, problem, NaiveBackend.ToParams(problem), AttentionPass.Forward);

    /// <summary>
    /// The forward kernel's own limits for a tile on <paramref name="device"/>: the tensor-core kernel's for 16-bit
    /// storage and the TF32 kernel's for float32 with <see cref="AttentionProblem.AllowTf32"/> — when that kernel runs
    /// the problem with its default tiles, so a search stays on the kernel the call would use — else the
    /// float32-math kernel's.
    /// </summary>
    private static Func<FnaTileShape, string?> ForwardCheck(ComputeDevice device, AttentionProblem problem, ProblemParams p)
    {
        var defaults = problem.QueryTile is null ? problem : null;
        if (problem.ElementType != ElementType.Float32 && defaults is not null && FusedBackend.TensorCoreTile(device, defaults, p) is not null)
        {
            return tile => FnaTensorCore.Check(device, p, tile);
        }

        if (problem.ElementType == ElementType.Float32 && problem.AllowTf32 && defaults is not null && FusedBackend.Tf32Tile(device, defaults, p) is not null)
        {
            return tile => FnaTf32.Check(device, p, tile);
        }

        return tile => FnaForward.Check(device, p, tile);
    }

    /// <summary>
    /// The tile shapes worth trying on <paramref name="device"/>: per axis every power of two from 1
    /// up to the first one covering the axis's longest dilation group; query tiles of
    /// <see cref="MinQueryTile"/> threads or more, KV sub-tiles of <see cref="MinKeyTile"/> to
    /// <see cref="MaxKeyTile"/> keys (both capped by what the problem holds); and only shapes the
    /// forward kernel the call would use accepts on the device (for 16-bit storage the tensor-core kernel:
    /// query tiles of 16–64, KV sub-tiles in multiples of 16; see <see cref="ForwardCheck"/>).
    /// </summary>
    public static List<(int[] Query, int[] Key)> SearchSpace(ComputeDevice device, AttentionProblem problem)
    {
        var rank = problem.Rank;
        var extents = new int[rank][];
        long allQueries = 1;
        for (var a = 0; a < rank; a++)
        {
            var groupLength = (problem.Spatial[a] + problem.Dilation[a] - 1) / problem.Dilation[a];
            var powers = new List<int> { 1 };
            while (powers[^1] < groupLength)
            {
                powers.Add(powers[^1] * 2);
            }

            extents[a] = [.. powers];
            allQueries *= powers[^1];
        }

        var p = NaiveBackend.ToParams(problem);
        var check = ForwardCheck(device, problem, p);

        // The tensor-core kernels run two threads per query (16-row warps): 16 queries already fill a warp.
        var minQuery = Math.Min(problem.ElementType != ElementType.Float32 || problem.AllowTf32 ? 16 : MinQueryTile, allQueries);
        var minKey = Math.Min(MinKeyTile, allQueries);
        var shapes = Combinations(extents).ToArray();
        var result = new List<(int[] Query, int[] Key)>();
        foreach (var query in shapes.Where(s => Product(s) >= minQuery))
        {
            foreach (var key in shapes.Where(s => Product(s) >= minKey && Product(s) <= MaxKeyTile))
            {
                if (check(Pad(query, key)) is null)
                {
                    result.Add((query, key));
                }
            }
        }

        return result;
    }

    /// <summary>Per-axis extents padded to the kernel's three axes (leading axes of extent 1).</summary>
    public static FnaTileShape Pad(int[] query, int[] key)
    {
        var pad = 3 - query.Length;
        int At(int[] values, int axis) => axis < pad ? 1 : values[axis - pad];
        return new FnaTileShape(At(query, 0), At(query, 1), At(query, 2), At(key, 0), At(key, 1), At(key, 2));
    }

    /// <summary>The real (unpadded) axes of a kernel tile shape for a problem of <paramref name="rank"/> axes.</summary>
    public static (int[] Query, int[] Key) Unpad(FnaTileShape tile, int rank)
    {
        int[] q = [tile.Q0, tile.Q1, tile.Q2];
        int[] k = [tile.K0, tile.K1, tile.K2];
        return (q[(3 - rank)..], k[(3 - rank)..]);
    }

    private static long Product(int[] values) => values.Aggregate(1L, (x, v) => x * v);

    private static IEnumerable<int[]> Combinations(int[][] extents)
    {
        IEnumerable<int[]> result = [[]];
        foreach (var axis in extents)
        {
            result = result.SelectMany(prefix => axis.Select(v => (int[])[.. prefix, v]));
        }

        return result;
    }
}
