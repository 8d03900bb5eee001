using System.Globalization;
using System.Text.Json;
using static Natten.Cli.Commands.ProfileCommand;

namespace Natten.Cli.Commands;

/// <summary>
/// <c>natten profile --dry-run</c> (the fused tile configurations the default accelerator accepts,
/// with the simulator's figures) and <c>--optimize</c> (times them and prints the best).
/// </summary>
internal static class ProfileTuning
{
    private static readonly CultureInfo _inv = CultureInfo.InvariantCulture;

    public static int DryRun(ProfileSetup setup, double forwardFlops, TextWriter stdout)
    {
        var candidates = Candidates(setup, out var defaultTiles);
        var timed = OptimizeOrder(candidates, defaultTiles, setup.MaxConfigs).ToHashSet();
        var rows = candidates.Select((t, i) => (Order: i + 1, Tiles: t, Sim: FusedTuning.Simulate(setup.Shape, setup.Options with { Tiles = t }, FusedKvTiling.Dynamic, setup.ElementType))).ToArray();
        if (setup.Json)
        {
            foreach (var (order, tiles, sim) in rows)
            {
                stdout.WriteLine(ProfileJson.Line(json =>
                {
                    json.WriteStartObject();
                    json.WriteBoolean("dry_run", true);
                    json.WriteNumber("order", order);
                    WriteTiles(json, tiles, setup.Rank);
                    setup.WriteProblem(json);
                    WriteSimulation(json, sim);
                    json.WriteBoolean("default", tiles == defaultTiles);
                    json.WriteBoolean("optimize_times", timed.Contains(tiles));
                    json.WriteEndObject();
                }));
            }

            return ExitCodes.Success;
        }

        stdout.WriteLine($"natten profile --dry-run: {setup.Describe()}; useful work: forward {forwardFlops / 1e9:0.######} GFLOP");
        stdout.WriteLine(
            $"fused tile configurations that run on {AcceleratorName()}: per axis powers of two, "
          + "query tiles of 32+ threads (16-64 queries, KV multiples of 16 where the tensor-core kernel runs), KV sub-tiles of 8-128 keys; least simulated work first");
        stdout.WriteLine();
        var table = new List<string[]> { new[] { "#", "tiles", "queries", "KV keys", "max visited", "of full", "bound", "computed/useful", "block-sparse", "" } };
        foreach (var (order, tiles, sim) in rows)
        {
            table.Add(
            [
                order.ToString(_inv), tiles.ToArgument(), Product(tiles.Query, setup.Rank).ToString(_inv), Product(tiles.KeyValue, setup.Rank).ToString(_inv),
                sim.MaxVisited.ToString(_inv), sim.FullAttentionSubTiles.ToString(_inv), sim.UpperBoundSpeedup.ToString("F2", _inv) + "x",
                (sim.VisitedFlops / sim.UsefulFlops).ToString("F2", _inv), sim.PerfectlyBlockSparse ? "yes" : "no",
                (tiles == defaultTiles ? "default" : string.Empty) + (timed.Contains(tiles) ? (tiles == defaultTiles ? ", " : string.Empty) + "optimize" : string.Empty),
            ]);
        }

        WriteTable(stdout, table, leftColumns: 2);
        stdout.WriteLine();
        stdout.WriteLine(
            $"{candidates.Count} configurations; --optimize times {timed.Count} of them (--max-configs {setup.MaxConfigs}): the default "
          + $"{defaultTiles.ToArgument()} first, then the least simulated work. Use one with --tiles Q/KV.");
        return ExitCodes.Success;
    }

    public static int Optimize(ProfileSetup setup, ProfileInputs inputs, double forwardFlops, TextWriter stdout, TextWriter stderr)
    {
        var candidates = Candidates(setup, out var defaultTiles);
        var order = OptimizeOrder(candidates, defaultTiles, setup.MaxConfigs).ToArray();
        var progress = new ProgressBar(stderr, order.Length);

        // One untimed call first: the kernel is compiled once for every tile shape (tiles are runtime values),
        // so without it the first configuration would pay the compilation whatever --warmup says.
        progress.Report(0, "compiling the fused kernel");
        MeasureForward(setup with { Warmup = 0, Repeat = 1 }, inputs, FusedBackendName, setup.Options with { Tiles = order[0] }, dense: false);
        var results = new List<(FusedTiles Tiles, Measurement Time, FusedSimulation Sim)>();
        for (var i = 0; i < order.Length; i++)
        {
            progress.Report(i, $"timing --tiles {order[i].ToArgument()}");
            var options = setup.Options with { Tiles = order[i] };
            results.Add((order[i], MeasureForward(setup, inputs, FusedBackendName, options, dense: false), FusedTuning.Simulate(setup.Shape, options, FusedKvTiling.Dynamic, setup.ElementType)));
        }

        progress.Finish("done");
        var ran = results.Where(r => r.Time.Ran).OrderBy(r => r.Time.MedianMs).ToArray();
        if (ran.Length == 0)
        {
            throw CliException.Usage($"no tile configuration could run: {results[0].Time.SkippedReason}");
        }

        var best = ran[0];
        var baseline = results.Find(r => r.Tiles == defaultTiles).Time;
        double? VsDefault(Measurement m) => baseline.Ran && m.Ran ? baseline.MedianMs / m.MedianMs : null;
        if (setup.Json)
        {
            foreach (var (tiles, time, sim) in results)
            {
                stdout.WriteLine(ProfileJson.Line(json =>
                {
                    json.WriteStartObject();
                    json.WriteBoolean("optimize", true);
                    json.WriteString("backend", FusedBackendName);
                    json.WriteString("pass", "forward");
                    WriteTiles(json, tiles, setup.Rank);
                    setup.WriteProblem(json);
                    json.WriteNumber("useful_gflop", forwardFlops / 1e9);
                    ProfileJson.WriteNumberOrNull(json, "ms_median", time.Ran ? time.MedianMs : null);
                    ProfileJson.WriteNumberOrNull(json, "ms_min", time.Ran ? time.MinMs : null);
                    ProfileJson.WriteNumberOrNull(json, "useful_tflops", time.Ran ? forwardFlops / (time.MedianMs * 1e-3) / 1e12 : null);
                    ProfileJson.WriteNumberOrNull(json, "speedup_vs_default", VsDefault(time));
                    WriteSimulation(json, sim);
                    json.WriteBoolean("default", tiles == defaultTiles);
                    json.WriteBoolean("best", tiles == best.Tiles);
                    if (time.Ran)
                    {
                        json.WriteNull("skipped_reason");
                    }
                    else
                    {
                        json.WriteString("skipped_reason", time.SkippedReason);
                    }

                    json.WriteString("machine", MachineDescription());
                    json.WriteBoolean("optimized_build", IsOptimizedBuild);
                    json.WriteEndObject();
                }));
            }

            return ExitCodes.Success;
        }

        stdout.WriteLine($"natten profile --optimize: {setup.Describe()}; useful work: forward {forwardFlops / 1e9:0.######} GFLOP");
        stdout.WriteLine(
            $"machine: {MachineDescription()}; {AttentionBackends.Describe(FusedBackendName)}; median of {setup.Repeat} after {setup.Warmup} warm-up; "
          + $"{order.Length} of {candidates.Count} configurations (--max-configs {setup.MaxConfigs})");
        stdout.WriteLine();
        var table = new List<string[]> { new[] { "tiles", "median ms", "min ms", "useful TFLOP/s", "vs default", "bound", "max visited", "" } };
        foreach (var (tiles, time, sim) in ran)
        {
            table.Add(
            [
                tiles.ToArgument(), time.MedianMs.ToString("F3", _inv), time.MinMs.ToString("F3", _inv),
                (forwardFlops / (time.MedianMs * 1e-3) / 1e12).ToString("0.000e+0", _inv),
                VsDefault(time) is { } x ? x.ToString("F2", _inv) + "x" : "n/a", sim.UpperBoundSpeedup.ToString("F2", _inv) + "x",
                sim.MaxVisited.ToString(_inv), tiles == defaultTiles ? "default" : string.Empty,
            ]);
        }

        WriteTable(stdout, table, leftColumns: 1);
        foreach (var (tiles, time, _) in results.Where(r => !r.Time.Ran))
        {
            stdout.WriteLine($"skipped {tiles.ToArgument()}: {time.SkippedReason}");
        }

        stdout.WriteLine();
        stdout.WriteLine(
            $"best: --tiles {best.Tiles.ToArgument()}  {best.Time.MedianMs.ToString("F3", _inv)} ms"
          + (VsDefault(best.Time) is { } gain ? $", {gain.ToString("F2", _inv)}x the default {defaultTiles.ToArgument()}" : string.Empty));
        return ExitCodes.Success;
    }

    /// <summary>The valid configurations (least simulated work first) and the default tile shape.</summary>
    private static IReadOnlyList<FusedTiles> Candidates(ProfileSetup setup, out FusedTiles defaultTiles)
    {
        defaultTiles = Normalise(FusedTuning.ResolveTiles(setup.Shape, setup.Options, setup.ElementType), setup.Rank);
        var candidates = FusedTuning.Candidates(setup.Shape, setup.Options, setup.ElementType).Select(t => Normalise(t, setup.Rank)).ToList();
        if (!candidates.Contains(defaultTiles) && FusedTuning.CanRun(setup.Shape, setup.Options with { Tiles = defaultTiles }, setup.ElementType, out _))
        {
            candidates.Insert(0, defaultTiles);
        }

        if (candidates.Count == 0)
        {
            throw CliException.Usage("no fused tile configuration fits this problem on the default accelerator.");
        }

        return candidates;
    }

    /// <summary>What --optimize times: the default tiles first (when valid), then the least simulated work, at most <paramref name="max"/>.</summary>
    private static IEnumerable<FusedTiles> OptimizeOrder(IReadOnlyList<FusedTiles> candidates, FusedTiles defaultTiles, int max)
        => (candidates.Contains(defaultTiles) ? [defaultTiles] : Array.Empty<FusedTiles>())
            .Concat(candidates.Where(t => t != defaultTiles))
            .Take(max);

    /// <summary>Per-axis values for every axis, so equal shapes compare equal (<c>8</c> vs <c>8x8</c>).</summary>
    private static FusedTiles Normalise(FusedTiles tiles, int rank)
        => new(AxisValues.PerAxis(ProblemOptions.Resolve(tiles.Query, rank, 1)), AxisValues.PerAxis(ProblemOptions.Resolve(tiles.KeyValue, rank, 1)));

    private static int Product(AxisValues values, int rank) => ProblemOptions.Resolve(values, rank, 1).Aggregate(1, (p, v) => p * v);

    private static void WriteTiles(Utf8JsonWriter json, FusedTiles tiles, int rank)
    {
        json.WriteString("tiles", tiles.ToArgument());
        ProfileJson.WriteArray(json, "query_tile", ProblemOptions.Resolve(tiles.Query, rank, 1));
        ProfileJson.WriteArray(json, "kv_tile", ProblemOptions.Resolve(tiles.KeyValue, rank, 1));
    }

    private static void WriteSimulation(Utf8JsonWriter json, FusedSimulation sim)
    {
        json.WriteNumber("simulated_bound", sim.UpperBoundSpeedup);
        json.WriteNumber("simulated_max_visited", sim.MaxVisited);
        json.WriteNumber("simulated_full_sub_tiles", sim.FullAttentionSubTiles);
        json.WriteNumber("simulated_visited_gflop", sim.VisitedFlops / 1e9);
        json.WriteBoolean("block_sparse", sim.PerfectlyBlockSparse);
    }

    private static void WriteTable(TextWriter stdout, List<string[]> rows, int leftColumns)
    {
        var widths = Enumerable.Range(0, rows[0].Length).Select(c => rows.Max(r => r[c].Length)).ToArray();
        foreach (var row in rows)
        {
            var cells = row.Select((cell, c) => c < leftColumns || c == row.Length - 1 ? cell.PadRight(widths[c]) : cell.PadLeft(widths[c]));
            stdout.WriteLine(string.Join("  ", cells).TrimEnd());
        }
    }
}
