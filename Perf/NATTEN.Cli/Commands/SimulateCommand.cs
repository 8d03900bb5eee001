using System.Globalization;

namespace Natten.Cli.Commands;

/// <summary>
/// <c>natten simulate</c>: the analytic model of the fused kernel (<see cref="FusedTuning.Simulate"/>)
/// for one problem and tile shape: KV sub-tiles visited per query tile, masking, useful versus
/// computed FLOPs, perfect block sparsity and the upper-bound speedup over self-attention.
/// Nothing is run on a device.
/// </summary>
internal static class SimulateCommand
{
    private static readonly CultureInfo _inv = CultureInfo.InvariantCulture;

    public static string UsageText =>
        $"""
        Usage: natten simulate [options]

        The GNA simulator for this library's fused kernel: for a problem and a tile shape, how many KV
        sub-tiles each query tile visits (the kernel's own tile ranges), how many need masks, useful
        versus computed FLOPs, whether the configuration is perfectly block-sparse, and the upper-bound
        speedup over self-attention = (sub-tiles under full attention) / (most sub-tiles any query tile
        visits). Nothing runs on a device; 'natten profile' measures the real speedup.

        Problem:
          --shape X           spatial extents, e.g. 1024, 32x32 or 30x48x80 (default 16x16)
        {ProblemOptions.Usage}
          --batch B           batch size, for the FLOP totals (default 1)
          --heads H           heads, for the FLOP totals (default 4)
          --dim D             query/key head dimension (default 32; picks the default tiles)
          --value-dim D       value head dimension (default: --dim)
          --tiles Q/KV        tile shapes, e.g. 4x8x8/2x8x8 (default: the fused backend's default)

        Model:
          --static            static KV tiling (sub-tiles on one global grid) instead of the kernel's
                              dynamic tiling (sub-tiles starting at each query tile's range start)
          --per-tile          also list every query tile: sub-tiles visited, unmasked, masked
          --json              one JSON object (plus one per query tile with --per-tile)
        """;

    public static int Execute(ArgumentReader args, TextWriter stdout)
    {
        if (args.WantsHelp)
        {
            stdout.WriteLine(UsageText);
            return ExitCodes.Success;
        }

        var spatial = ProblemOptions.ReadShape(args);
        var options = ProblemOptions.ReadTiles(args, ProblemOptions.Read(args, defaultKernelSize: 7));
        var batch = args.GetInt("--batch", 1, min: 1);
        var heads = args.GetInt("--heads", 4, min: 1);
        var dim = args.GetInt("--dim", 32, min: 1);
        var valueDim = args.GetInt("--value-dim", dim, min: 1);
        var tiling = args.GetFlag("--static") ? FusedKvTiling.Static : FusedKvTiling.Dynamic;
        var perTile = args.GetFlag("--per-tile");
        var json = args.GetFlag("--json");
        args.ThrowIfUnused("simulate");

        var shape = new AttentionShape(batch, spatial, heads, dim) { ValueDim = valueDim };
        var sim = FusedTuning.Simulate(shape, options, tiling);
        var runs = FusedTuning.CanRun(shape, options with { Tiles = sim.Tiles }, ElementType.Float32, out var reason);
        var device = "on " + ProfileCommand.AcceleratorName();
        if (json)
        {
            WriteJson(stdout, shape, options, sim, runs, reason, device, perTile);
        }
        else
        {
            WriteText(stdout, shape, options, sim, runs, reason, device, perTile);
        }

        return ExitCodes.Success;
    }

    private static void WriteText(
        TextWriter stdout, AttentionShape shape, NeighborhoodAttentionOptions options, FusedSimulation sim, bool runs, string reason, string device, bool perTile)
    {
        var rank = shape.Rank;
        var visited = sim.VisitedSubTiles;
        string Share(double x) => visited == 0 ? "0" : $"{x.ToString("0", _inv)} ({(100 * x / visited).ToString("0.0", _inv)}%)";
        stdout.WriteLine(
            $"natten simulate: {rank}D {shape}, kernel {ProblemOptions.Format(options.KernelSize, rank, 0)} stride {ProblemOptions.Format(options.Stride, rank, 1)} "
          + $"dilation {ProblemOptions.Format(options.Dilation, rank, 1)} causal {ProblemOptions.Format(options.Causal, rank)}");
        stdout.WriteLine(
            $"tiles: {sim.Tiles} ({(options.Tiles is null ? "default" : "--tiles")}); "
          + (sim.Tiling == FusedKvTiling.Dynamic
              ? "dynamic KV tiling (sub-tiles start at each query tile's range start, as the fused kernel runs)"
              : "static KV tiling (sub-tiles on one global grid; a model, the fused kernel tiles dynamically)"));
        stdout.WriteLine();
        var rows = new (string Name, string Value)[]
        {
            ("query tiles", $"{sim.QueryTiles} per (batch, head){(sim.NonEmptyQueryTiles < sim.QueryTiles ? $", {sim.NonEmptyQueryTiles} holding queries" : string.Empty)}"),
            ("KV sub-tiles per query tile", $"min {sim.MinVisited}, mean {sim.MeanVisited.ToString("0.##", _inv)}, max {sim.MaxVisited}; full attention {sim.FullAttentionSubTiles}"),
            ("KV sub-tiles visited", $"{visited.ToString("0", _inv)} per (batch, head)"),
            ("  unmasked", Share(sim.UnmaskedSubTiles)),
            ("  partially masked", Share(sim.PartiallyMaskedSubTiles)),
            ("  fully masked", Share(sim.FullyMaskedSubTiles)),
            ("FLOPs", $"useful {G(sim.UsefulFlops)}, computed {G(sim.VisitedFlops)} ({(100 * sim.UsefulFlops / sim.VisitedFlops).ToString("0.0", _inv)}% useful; "
                    + $"{G(sim.WastedFlops)} masked or padding), self-attention {G(sim.SelfAttentionFlops)}"),
            ("perfectly block-sparse", (sim.PerfectlyBlockSparse ? "yes" : "no")
                    + $" (rule: Tkv divides K, Tq divides s, non-causal on every axis: {(sim.MeetsBlockSparseRule ? "met" : "not met")})"),
            ("upper-bound speedup", $"{X(sim.UpperBoundSpeedup)} over self-attention ({sim.FullAttentionSubTiles} / {sim.MaxVisited} sub-tiles)"),
            ("FLOP-wise bound", $"{X(sim.FlopBoundSpeedup)} = 1/(1-sparsity), sparsity {sim.Sparsity.ToString("0.0000", _inv)}"),
            ("runs " + device, runs ? "yes" : $"no: {reason}"),
        };
        var width = rows.Max(r => r.Name.Length);
        foreach (var (name, value) in rows)
        {
            stdout.WriteLine($"{(name + ":").PadRight(width + 2)}{value}");
        }

        if (perTile)
        {
            stdout.WriteLine();
            stdout.WriteLine("query tile  tile index  queries  visited  unmasked  partially masked  fully masked");
            foreach (var t in sim.QueryTileVisits())
            {
                stdout.WriteLine(
                    $"{t.Index,10}  {string.Join('x', t.TileIndex),10}  {t.Queries,7}  {t.Visited,7}  {t.Unmasked,8}  {t.PartiallyMasked,16}  {t.FullyMasked,12}");
            }
        }
    }

    private static void WriteJson(
        TextWriter stdout, AttentionShape shape, NeighborhoodAttentionOptions options, FusedSimulation sim, bool runs, string reason, string device, bool perTile)
    {
        var rank = shape.Rank;
        stdout.WriteLine(ProfileJson.Line(json =>
        {
            json.WriteStartObject();
            json.WriteNumber("rank", rank);
            json.WriteNumber("batch", shape.Batch);
            ProfileJson.WriteArray(json, "shape", ProblemOptions.Resolve(shape.Spatial, rank, 1));
            json.WriteNumber("heads", shape.Heads);
            json.WriteNumber("dim", shape.HeadDim);
            json.WriteNumber("value_dim", shape.ValueDim);
            ProfileJson.WriteArray(json, "kernel_size", ProblemOptions.Resolve(options.KernelSize, rank, 0));
            ProfileJson.WriteArray(json, "stride", ProblemOptions.Resolve(options.Stride, rank, 1));
            ProfileJson.WriteArray(json, "dilation", ProblemOptions.Resolve(options.Dilation, rank, 1));
            json.WriteStartArray("causal");
            foreach (var c in ProblemOptions.Resolve(options.Causal, rank))
            {
                json.WriteBooleanValue(c);
            }

            json.WriteEndArray();
            json.WriteString("tiles", sim.Tiles.ToArgument());
            ProfileJson.WriteArray(json, "query_tile", ProblemOptions.Resolve(sim.Tiles.Query, rank, 1));
            ProfileJson.WriteArray(json, "kv_tile", ProblemOptions.Resolve(sim.Tiles.KeyValue, rank, 1));
            json.WriteBoolean("default_tiles", options.Tiles is null);
            json.WriteString("tiling", sim.Tiling == FusedKvTiling.Static ? "static" : "dynamic");
            json.WriteNumber("query_tiles", sim.QueryTiles);
            json.WriteNumber("non_empty_query_tiles", sim.NonEmptyQueryTiles);
            json.WriteNumber("min_visited", sim.MinVisited);
            json.WriteNumber("mean_visited", sim.MeanVisited);
            json.WriteNumber("max_visited", sim.MaxVisited);
            json.WriteNumber("full_attention_sub_tiles", sim.FullAttentionSubTiles);
            json.WriteNumber("visited_sub_tiles", sim.VisitedSubTiles);
            json.WriteNumber("unmasked_sub_tiles", sim.UnmaskedSubTiles);
            json.WriteNumber("partially_masked_sub_tiles", sim.PartiallyMaskedSubTiles);
            json.WriteNumber("fully_masked_sub_tiles", sim.FullyMaskedSubTiles);
            json.WriteNumber("useful_gflop", sim.UsefulFlops / 1e9);
            json.WriteNumber("visited_gflop", sim.VisitedFlops / 1e9);
            json.WriteNumber("self_attention_gflop", sim.SelfAttentionFlops / 1e9);
            json.WriteNumber("sparsity", sim.Sparsity);
            json.WriteBoolean("perfectly_block_sparse", sim.PerfectlyBlockSparse);
            json.WriteBoolean("meets_block_sparse_rule", sim.MeetsBlockSparseRule);
            json.WriteNumber("upper_bound_speedup", sim.UpperBoundSpeedup);
            json.WriteNumber("flop_bound_speedup", sim.FlopBoundSpeedup);
            json.WriteString("device", device);
            json.WriteBoolean("runs_on_device", runs);
            if (runs)
            {
                json.WriteNull("device_reason");
            }
            else
            {
                json.WriteString("device_reason", reason);
            }

            json.WriteEndObject();
        }));

        if (!perTile)
        {
            return;
        }

        foreach (var t in sim.QueryTileVisits())
        {
            stdout.WriteLine(ProfileJson.Line(json =>
            {
                json.WriteStartObject();
                json.WriteNumber("query_tile", t.Index);
                ProfileJson.WriteArray(json, "tile_index", t.TileIndex);
                json.WriteNumber("queries", t.Queries);
                json.WriteNumber("visited", t.Visited);
                json.WriteNumber("unmasked", t.Unmasked);
                json.WriteNumber("partially_masked", t.PartiallyMasked);
                json.WriteNumber("fully_masked", t.FullyMasked);
                json.WriteEndObject();
            }));
        }
    }

    private static string X(double x) => x.ToString("F2", _inv) + "x";

    private static string G(double flops) => flops >= 1e9 ? $"{(flops / 1e9).ToString("0.###", _inv)} GFLOP" : $"{(flops / 1e6).ToString("0.###", _inv)} MFLOP";
}
