using System.Text.Json;

namespace Natten.Tests.Cli;

/// <summary>
/// <c>natten profile</c>'s fused-tile options on tiny problems: --tiles, --dry-run, --optimize,
/// --plot, the new JSON fields and their errors. Formats and contracts only; speed is what the
/// tool measures, never asserted here.
/// </summary>
[TestFixture]
public sealed class ProfileTuningTests
{
    private static readonly string[] _tiny = ["profile", "--shape", "6x6", "--kernel-size", "3", "--heads", "1", "--dim", "4", "--warmup", "0", "--repeat", "1"];

    [Test]
    public void DryRunListsValidConfigurations()
    {
        var result = CliRunner.Run([.. _tiny, "--dry-run", "--max-configs", "3"]);
        result.AssertSuccess();
        var lines = result.Stdout.Split('\n');
        var rows = lines.Where(l => System.Text.RegularExpressions.Regex.IsMatch(l, @"^\d+\s+\d+x\d+/\d+x\d+\s")).ToArray();
        using (Assert.EnterMultipleScope())
        {
            Assert.That(lines[0], Does.StartWith("natten profile --dry-run: 2D B=1 6x6 H=1/1 D=4 Dv=4, kernel 3x3"));
            Assert.That(lines, Has.Some.Match(@"^#\s+tiles\s+queries\s+KV keys\s+max visited\s+of full\s+bound\s+computed/useful\s+block-sparse$"));
            Assert.That(rows, Is.Not.Empty);
            Assert.That(rows.Count(r => r.Contains("optimize", StringComparison.Ordinal)), Is.EqualTo(Math.Min(3, rows.Length)));
            Assert.That(rows, Has.One.Contains("default"));
            Assert.That(result.Stdout, Does.Contain($"{rows.Length} configurations; --optimize times {Math.Min(3, rows.Length)} of them"));
        }
    }

    [Test]
    public void DryRunJsonCarriesTheSimulation()
    {
        var result = CliRunner.Run([.. _tiny, "--dry-run", "--json"]);
        result.AssertSuccess();
        var rows = JsonLines(result.Stdout);
        Assert.That(rows, Is.Not.Empty);
        foreach (var row in rows)
        {
            using (Assert.EnterMultipleScope())
            {
                Assert.That(row.GetProperty("dry_run").GetBoolean(), Is.True);
                Assert.That(row.GetProperty("tiles").GetString(), Does.Match(@"^\d+x\d+/\d+x\d+$"));
                Assert.That(row.GetProperty("query_tile").GetArrayLength(), Is.EqualTo(2));
                Assert.That(row.GetProperty("simulated_bound").GetDouble(), Is.GreaterThan(0));
                Assert.That(row.GetProperty("simulated_max_visited").GetInt64(), Is.LessThanOrEqualTo(row.GetProperty("simulated_full_sub_tiles").GetInt64()));
            }
        }

        Assert.That(rows.Count(r => r.GetProperty("default").GetBoolean()), Is.EqualTo(1));
    }

    [Test]
    public void OptimizeTimesAtMostMaxConfigsAndPrintsTheBest()
    {
        var result = CliRunner.Run([.. _tiny, "--optimize", "--max-configs", "2"]);
        var lines = result.Stdout.Split('\n');
        using (Assert.EnterMultipleScope())
        {
            Assert.That(result.ExitCode, Is.Zero, result.Stderr);
            Assert.That(result.Stderr, Does.Contain("] 2/2 done"), "the progress bar goes to stderr");
            Assert.That(result.Stderr, Does.Not.Contain("natten:"));
            Assert.That(lines[0], Does.StartWith("natten profile --optimize: 2D B=1 6x6"));
            Assert.That(lines.Count(l => System.Text.RegularExpressions.Regex.IsMatch(l, @"^\d+x\d+/\d+x\d+\s+\d+\.\d{3}\s")), Is.EqualTo(2));
            Assert.That(lines, Has.One.Match(@"^best: --tiles \d+x\d+/\d+x\d+\s+\d+\.\d{3} ms"));
        }
    }

    [Test]
    public void OptimizeJsonMarksOneBest()
    {
        var result = CliRunner.Run([.. _tiny, "--optimize", "--max-configs", "2", "--json"]);
        Assert.That(result.ExitCode, Is.Zero, result.Stderr);
        var rows = JsonLines(result.Stdout);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(rows, Has.Length.EqualTo(2));
            Assert.That(rows.Count(r => r.GetProperty("best").GetBoolean()), Is.EqualTo(1));
            Assert.That(rows[0].GetProperty("default").GetBoolean(), Is.True, "the default tiles are timed first");
            Assert.That(rows.Select(r => r.GetProperty("ms_median").GetDouble()), Is.All.GreaterThan(0));
            Assert.That(rows[0].GetProperty("speedup_vs_default").GetDouble(), Is.EqualTo(1.0));
        }
    }

    [Test]
    public void JsonCarriesTilesDenseAndBound()
    {
        var result = CliRunner.Run([.. _tiny, "--backend", "fused,naive", "--tiles", "4x4/2x2", "--json"]);
        result.AssertSuccess();
        var rows = JsonLines(result.Stdout);
        var fused = rows.Single(r => r.GetProperty("backend").GetString() == "fused");
        var naive = rows.Single(r => r.GetProperty("backend").GetString() == "naive");
        using (Assert.EnterMultipleScope())
        {
            Assert.That(fused.GetProperty("tiles").GetString(), Is.EqualTo("4x4/2x2"));
            Assert.That(fused.GetProperty("speedup_vs_naive").GetDouble(), Is.GreaterThan(0));
            Assert.That(fused.GetProperty("dense_ms_median").GetDouble(), Is.GreaterThan(0));
            Assert.That(fused.GetProperty("speedup_vs_dense").GetDouble(), Is.GreaterThan(0));

            // 6x6, K = 3, tiles 4x4/2x2: per axis the tiles hold queries 0-3 (keys [0, 5): 3 sub-tiles) and 4-5 (keys [3, 6): 2),
            // so at most 3x3 = 9 of the (6/2)^2 = 9 sub-tiles of full attention.
            Assert.That(fused.GetProperty("simulated_max_visited").GetInt64(), Is.EqualTo(9));
            Assert.That(fused.GetProperty("simulated_full_sub_tiles").GetInt64(), Is.EqualTo(9));
            Assert.That(fused.GetProperty("simulated_bound").GetDouble(), Is.EqualTo(1.0));
            Assert.That(fused.GetProperty("block_sparse").GetBoolean(), Is.False);
            Assert.That(naive.GetProperty("speedup_vs_naive").GetDouble(), Is.EqualTo(1.0));
            Assert.That(naive.GetProperty("tiles").ValueKind, Is.EqualTo(JsonValueKind.Null));
            Assert.That(naive.GetProperty("simulated_bound").ValueKind, Is.EqualTo(JsonValueKind.Null));
        }
    }

    [Test]
    public void TableShowsTheBoundNextToTheFusedSpeedup()
    {
        var result = CliRunner.Run([.. _tiny, "--backend", "fused", "--tiles", "4x4/2x2"]);
        result.AssertSuccess();
        using (Assert.EnterMultipleScope())
        {
            Assert.That(result.Stdout, Does.Contain("fused tiles: Q 4x4 / KV 2x2 (--tiles); simulator (dynamic KV tiling): at most 9 of 9 KV sub-tiles"));
            Assert.That(result.Stdout, Does.Match(@"(?m)^fused\s+forward\s+\d+\.\d{3}\s+\d+\.\d{3}\s+\S+\s+n/a\s+n/a\s+\d+\.\d{3}\s+\d+\.\d{2}x\s+1\.00x\s+\d+\.\d{2}$"));
        }
    }

    [Test]
    public void PlotWritesAPng()
    {
        using var temp = new TempDirectory();
        var path = temp.File("speedup.png");
        var result = CliRunner.Run([.. _tiny, "--backend", "fused,naive", "--plot", path, "--plot-kernels", "3,5"]);
        result.AssertSuccess();
        var bytes = File.ReadAllBytes(path);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(bytes, Has.Length.GreaterThan(1000));
            Assert.That(bytes.Take(8), Is.EqualTo(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }), "PNG signature");
            Assert.That(result.Stdout, Does.Contain($"plot: {path} (speedup over dense attention for kernel sizes 3,5)"));
        }
    }

    [Test]
    public void PlotJsonHasOnePointPerBackendAndKernel()
    {
        using var temp = new TempDirectory();
        var result = CliRunner.Run([.. _tiny, "--backend", "naive", "--plot", temp.File("p.png"), "--plot-kernels", "3,5", "--json"]);
        result.AssertSuccess();
        var points = JsonLines(result.Stdout).Where(r => r.TryGetProperty("plot_point", out _)).ToArray();
        Assert.That(points.Select(p => p.GetProperty("plot_kernel_size").GetInt32()), Is.EqualTo(new[] { 3, 5 }));
        Assert.That(File.Exists(temp.File("p.png")), Is.True);
    }

    private static IEnumerable<TestCaseData> ErrorCases()
    {
        TestCaseData Case(string name, string contains, params string[] args) => new TestCaseData(args, contains).SetName($"ProfileTuningError_{name}");
        yield return Case("TilesWithoutSlash", "--tiles: '8x8' is not a tile pair Q/KV", "profile", "--tiles", "8x8");
        yield return Case("TilesNotIntegers", "--tiles: 'axb/2' is not a tile pair", "profile", "--tiles", "axb/2");
        yield return Case("TilesTooLarge", "--tiles 64x64/4x4 cannot run here: a 4096-query tile needs 4096 threads per group", "profile", "--tiles", "64x64/4x4");
        yield return Case("TilesZero", "--tiles (query tile) on axis 1 is 0", "profile", "--tiles", "4x0/2x2");
        yield return Case("TilesWrongRank", "--tiles (query tile) has 3 values", "profile", "--tiles", "4x4x4/2x2x2");
        yield return Case("TilesWithoutFused", "--backend does not include it", "profile", "--backend", "naive", "--tiles", "4x4/2x2");
        yield return Case("OptimizeWithTiles", "leave out --tiles", "profile", "--optimize", "--tiles", "4x4/2x2");
        yield return Case("OptimizeWithoutFused", "--backend does not include it", "profile", "--optimize", "--backend", "naive");
        yield return Case("ZeroMaxConfigs", "--max-configs is 0", "profile", "--optimize", "--max-configs", "0");
        yield return Case("PlotFolderMissing", "does not exist", "profile", "--plot", "/nonexistent-natten-dir/p.png");
        yield return Case("PlotKernelTooLarge", "kernel size 9 does not fit", "profile", "--shape", "6x6", "--kernel-size", "3", "--plot", "p.png", "--plot-kernels", "9");
        yield return Case("PlotKernelsWithoutPlot", "give --plot FILE.png too", "profile", "--plot-kernels", "3");
        yield return Case("PlotKernelsNotIntegers", "--plot-kernels: '3,x'", "profile", "--plot", "p.png", "--plot-kernels", "3,x");
        yield return Case("PlotReferenceOnly", "needs a backend other than 'reference'", "profile", "--plot", "p.png", "--backend", "reference");
    }

    [TestCaseSource(nameof(ErrorCases))]
    public void ErrorsAreOneLine(string[] args, string contains) => CliRunner.Run(args).AssertOneLineError(2, contains);

    internal static JsonElement[] JsonLines(string stdout)
        => [.. stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement)];
}
