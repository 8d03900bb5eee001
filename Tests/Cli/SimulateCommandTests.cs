namespace Natten.Tests.Cli;

/// <summary><c>natten simulate</c>: the GNA worked example through the tool, JSON, per-tile output and errors.</summary>
[TestFixture]
public sealed class SimulateCommandTests
{
    private static readonly string[] _video = ["simulate", "--shape", "30x48x80", "--kernel-size", "18x24x24", "--tiles", "4x8x8/2x8x8"];

    [TestCase(new string[0], "5.11x", "(900 / 176 sub-tiles)", "no")]
    [TestCase(new[] { "--static" }, "3.27x", "(900 / 275 sub-tiles)", "no")]
    [TestCase(new[] { "--stride", "16x8x8" }, "11.11x", "(900 / 81 sub-tiles)", "yes")]
    [TestCase(new[] { "--stride", "16x8x8", "--static" }, "11.11x", "(900 / 81 sub-tiles)", "yes")]
    public void WorkedExample(string[] extra, string bound, string ratio, string blockSparse)
    {
        var result = CliRunner.Run([.. _video, .. extra]);
        result.AssertSuccess();
        var lines = result.Stdout.Split('\n');
        using (Assert.EnterMultipleScope())
        {
            Assert.That(lines[0], Does.StartWith("natten simulate: 3D B=1 30x48x80"));
            Assert.That(lines[1], Does.StartWith("tiles: Q 4x8x8 / KV 2x8x8 (--tiles); " + (extra.Contains("--static") ? "static" : "dynamic")));
            Assert.That(lines, Has.One.Match($@"^upper-bound speedup:\s+{bound.Replace(".", @"\.", StringComparison.Ordinal)} over self-attention {System.Text.RegularExpressions.Regex.Escape(ratio)}$"));
            Assert.That(lines, Has.One.Match($@"^perfectly block-sparse:\s+{blockSparse} "));
            Assert.That(lines, Has.One.Match(@"^FLOP-wise bound:\s+11\.11x = 1/\(1-sparsity\)"));
            Assert.That(lines, Has.One.Match(@"^  fully masked:\s+0 "));
            Assert.That(lines, Has.One.Match(@"^runs on \S+"));
        }
    }

    [Test]
    public void JsonHasTheModelFields()
    {
        var result = CliRunner.Run([.. _video, "--json"]);
        result.AssertSuccess();
        var row = ProfileTuningTests.JsonLines(result.Stdout).Single();
        using (Assert.EnterMultipleScope())
        {
            Assert.That(row.GetProperty("tiling").GetString(), Is.EqualTo("dynamic"));
            Assert.That(row.GetProperty("tiles").GetString(), Is.EqualTo("4x8x8/2x8x8"));
            Assert.That(row.GetProperty("query_tiles").GetInt64(), Is.EqualTo(8 * 6 * 10));
            Assert.That(row.GetProperty("max_visited").GetInt64(), Is.EqualTo(176));
            Assert.That(row.GetProperty("full_attention_sub_tiles").GetInt64(), Is.EqualTo(900));
            Assert.That(row.GetProperty("upper_bound_speedup").GetDouble(), Is.EqualTo(900.0 / 176).Within(1e-12));
            Assert.That(row.GetProperty("flop_bound_speedup").GetDouble(), Is.EqualTo(30.0 * 48 * 80 / (18 * 24 * 24)).Within(1e-9));
            Assert.That(
                row.GetProperty("unmasked_sub_tiles").GetDouble() + row.GetProperty("partially_masked_sub_tiles").GetDouble()
                + row.GetProperty("fully_masked_sub_tiles").GetDouble(),
                Is.EqualTo(row.GetProperty("visited_sub_tiles").GetDouble()));
            Assert.That(row.GetProperty("perfectly_block_sparse").GetBoolean(), Is.False);
            Assert.That(row.GetProperty("useful_gflop").GetDouble(), Is.LessThan(row.GetProperty("visited_gflop").GetDouble()));
        }
    }

    [Test]
    public void PerTileListsEveryQueryTile()
    {
        // 1D n = 8, K = 3, tiles 4 / 2 (counted by hand in FnaSimulatorTests): two tiles of 3 masked sub-tiles each.
        var result = CliRunner.Run("simulate", "--shape", "8", "--kernel-size", "3", "--tiles", "4/2", "--per-tile", "--json");
        result.AssertSuccess();
        var rows = ProfileTuningTests.JsonLines(result.Stdout);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(rows, Has.Length.EqualTo(3));
            Assert.That(rows[0].GetProperty("upper_bound_speedup").GetDouble(), Is.EqualTo(4.0 / 3).Within(1e-12));
            Assert.That(rows.Skip(1).Select(r => r.GetProperty("visited").GetInt64()), Is.EqualTo(new long[] { 3, 3 }));
            Assert.That(rows.Skip(1).Select(r => r.GetProperty("partially_masked").GetInt64()), Is.EqualTo(new long[] { 3, 3 }));
        }

        var text = CliRunner.Run("simulate", "--shape", "8", "--kernel-size", "3", "--tiles", "4/2", "--per-tile");
        text.AssertSuccess();
        Assert.That(text.Stdout, Does.Match(@"(?m)^\s+1\s+1\s+4\s+3\s+0\s+3\s+0$"));
    }

    [Test]
    public void DefaultTilesAreNamed()
    {
        var result = CliRunner.Run("simulate");
        result.AssertSuccess();
        Assert.That(result.Stdout, Does.Contain("tiles: Q 8x8 / KV 4x4 (default); dynamic KV tiling"));
    }

    private static IEnumerable<TestCaseData> ErrorCases()
    {
        TestCaseData Case(string name, string contains, params string[] args) => new TestCaseData(args, contains).SetName($"SimulateError_{name}");
        yield return Case("BadTiles", "--tiles: '4x4' is not a tile pair Q/KV", "simulate", "--tiles", "4x4");
        yield return Case("KernelTooLarge", "axis length", "simulate", "--shape", "8x8", "--kernel-size", "9");
        yield return Case("UnknownOption", "unknown option '--backend' for 'simulate'", "simulate", "--backend", "fused");
        yield return Case("TileRank", "--tiles (KV sub-tile) has 3 values", "simulate", "--tiles", "4x4/2x2x2");
    }

    [TestCaseSource(nameof(ErrorCases))]
    public void ErrorsAreOneLine(string[] args, string contains) => CliRunner.Run(args).AssertOneLineError(2, contains);
}
