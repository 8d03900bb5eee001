using System.Text.Json;
using Natten.Cli;

namespace Natten.Tests.Cli;

/// <summary>
/// <c>natten profile --pattern</c> on tiny problems (the format and the numbers' consistency, not the speed):
/// the allowed-pair count and useful FLOPs against an independent count from each pattern's own definition,
/// densities, ratios derived from the reported medians, skipped backends; and <c>natten run --export-mask</c>
/// against the same definitions.
/// </summary>
[TestFixture]
public sealed class ProfileBlockSparseTests
{
    /// <summary>A pattern on a tiny problem: extra arguments and the pattern as a predicate over (batch, head, query, key).</summary>
    public sealed record Case(
        string Name, string Pattern, int[] Grid, int KeyTokens, int Batch, int Heads, string BlockSize, Func<int, int, int, int, bool> Allows,
        Action<string>? Files = null)
    {
        public int QueryTokens => Grid.Aggregate(1, (a, b) => a * b);
    }

    private static readonly int[] _segmentIds = [0, 0, 0, 1, 1, -1, 2, 2, 2, 2, 0, 0, 1, 1, 1, -1, 3, 3];

    private static IEnumerable<TestCaseData> Cases()
    {
        static bool Halo(int q, int k, int width, int block, int halo)
        {
            bool Axis(int qc, int kc) => kc >= (qc / block * block) - halo && kc <= (qc / block * block) + block - 1 + halo;
            return Axis(q / width, k / width) && Axis(q % width, k % width);
        }

        int[] lengths = [7, 12];
        Case[] cases =
        [
            // FlashAttention window (3, 1), bottom-right aligned: offset Nk - Nq = 4.
            new("sliding_cross", "sliding:3,1", [10], 14, 1, 2, "4", (b, h, q, k) => k - q - 4 >= -3 && k - q - 4 <= 1),
            new("causal", "causal", [17], 17, 2, 1, "4x8", (b, h, q, k) => k <= q),
            new("strided", "strided:1,2,1", [12], 12, 1, 3, "3",
                (b, h, q, k) => k <= q && (h == 0 || q / 3 == k / 3 || (k / 3) % 2 == (h - 1) % 2)),
            new("halo_2d", "halo:2,1", [4, 6], 24, 1, 2, "6", (b, h, q, k) => Halo(q, k, 6, 2, 1)),
            new("segments", "segments:{dir}/ids.npy", [18], 18, 1, 2, "4",
                (b, h, q, k) => _segmentIds[q] >= 0 && _segmentIds[q] == _segmentIds[k],
                dir => Npy.Write(Path.Combine(dir, "ids.npy"), [18], [.. _segmentIds.Select(i => (float)i)])),
            new("documents", "documents:0,5,12,16", [16], 16, 1, 2, "4", (b, h, q, k) => Doc(q) == Doc(k)),
            new("key_padding", "padding:7,12", [9], 13, 2, 2, "4x5", (b, h, q, k) => k < lengths[b]),
        ];
        return cases.Select(c => new TestCaseData(c).SetName($"ProfileBlockSparse_{c.Name}"));

        static int Doc(int t) => t < 5 ? 0 : t < 12 ? 1 : 2;
    }

    private static long IndependentPairs(Case c)
    {
        long pairs = 0;
        for (var b = 0; b < c.Batch; b++)
        {
            for (var h = 0; h < c.Heads; h++)
            {
                for (var q = 0; q < c.QueryTokens; q++)
                {
                    for (var k = 0; k < c.KeyTokens; k++)
                    {
                        pairs += c.Allows(b, h, q, k) ? 1 : 0;
                    }
                }
            }
        }

        return pairs;
    }

    /// <summary>Blocks with at least one allowed pair, counted from the predicate (a block mask must list at least these).</summary>
    private static long NonEmptyBlocks(Case c, int queryBlock, int keyBlock)
    {
        long blocks = 0;
        for (var b = 0; b < c.Batch; b++)
        {
            for (var h = 0; h < c.Heads; h++)
            {
                for (var q0 = 0; q0 < c.QueryTokens; q0 += queryBlock)
                {
                    for (var k0 = 0; k0 < c.KeyTokens; k0 += keyBlock)
                    {
                        var any = false;
                        for (var q = q0; q < Math.Min(q0 + queryBlock, c.QueryTokens) && !any; q++)
                        {
                            for (var k = k0; k < Math.Min(k0 + keyBlock, c.KeyTokens) && !any; k++)
                            {
                                any = c.Allows(b, h, q, k);
                            }
                        }

                        blocks += any ? 1 : 0;
                    }
                }
            }
        }

        return blocks;
    }

    private static (int Query, int Key) Blocks(string text)
    {
        var parts = text.Split('x').Select(int.Parse).ToArray();
        return parts.Length == 1 ? (parts[0], parts[0]) : (parts[0], parts[1]);
    }

    [TestCaseSource(nameof(Cases))]
    public void TheFlopCountIsTheIndependentPairCount(Case c)
    {
        using var dir = new TempDirectory();
        c.Files?.Invoke(dir.Path);
        const int Dim = 4;
        const int ValueDim = 3;
        var result = CliRunner.Run(
            "profile", "--pattern", c.Pattern.Replace("{dir}", dir.Path, StringComparison.Ordinal), "--shape", string.Join('x', c.Grid),
            "--key-tokens", c.KeyTokens.ToString(System.Globalization.CultureInfo.InvariantCulture), "--batch", c.Batch.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--heads", c.Heads.ToString(System.Globalization.CultureInfo.InvariantCulture), "--dim", $"{Dim}", "--value-dim", $"{ValueDim}",
            "--block-size", c.BlockSize, "--warmup", "0", "--repeat", "1", "--json");
        result.AssertSuccess();
        var lines = Lines(result);
        Assert.That(lines.Select(l => l.GetProperty("backend").GetString()), Is.EqualTo(new[] { "fused", "naive", "reference" }));

        var pairs = IndependentPairs(c);
        var total = (long)c.Batch * c.Heads * c.QueryTokens * c.KeyTokens;
        var (bq, bk) = Blocks(c.BlockSize);
        var blocksTotal = (long)c.Batch * c.Heads * ((c.QueryTokens + bq - 1) / bq) * ((c.KeyTokens + bk - 1) / bk);
        var nonEmpty = NonEmptyBlocks(c, bq, bk);
        foreach (var line in lines)
        {
            using (Assert.EnterMultipleScope())
            {
                Assert.That(line.GetProperty("pass").GetString(), Is.EqualTo("forward"));
                Assert.That(line.GetProperty("allowed_pairs").GetInt64(), Is.EqualTo(pairs), "allowed pairs");
                Assert.That(line.GetProperty("total_pairs").GetInt64(), Is.EqualTo(total));
                Assert.That(line.GetProperty("pair_density").GetDouble(), Is.EqualTo((double)pairs / total).Within(1e-12));
                Assert.That(line.GetProperty("useful_gflop").GetDouble() * 1e9, Is.EqualTo(2.0 * (Dim + ValueDim) * pairs).Within(1e-6), "useful FLOPs = 2(D+Dv)·pairs");
                Assert.That(line.GetProperty("blocks_total").GetInt64(), Is.EqualTo(blocksTotal));
                Assert.That(line.GetProperty("blocks_listed").GetInt64(), Is.InRange(nonEmpty, blocksTotal), "a mask lists every block with an allowed pair");
                Assert.That(
                    line.GetProperty("block_density").GetDouble(),
                    Is.EqualTo(line.GetProperty("blocks_listed").GetDouble() / blocksTotal).Within(1e-12));
                Assert.That(line.GetProperty("query_tokens").GetInt32(), Is.EqualTo(c.QueryTokens));
                Assert.That(line.GetProperty("key_tokens").GetInt32(), Is.EqualTo(c.KeyTokens));
                var ms = line.GetProperty("ms_median").GetDouble();
                Assert.That(ms, Is.GreaterThan(0));
                Assert.That(
                    line.GetProperty("useful_gflops").GetDouble(),
                    Is.EqualTo(line.GetProperty("useful_gflop").GetDouble() / (ms / 1e3)).Within(1e-9).Percent);
                Assert.That(line.GetProperty("skipped_reason").ValueKind, Is.EqualTo(JsonValueKind.Null));
            }
        }

        var fused = lines[0];
        var naive = lines[1];
        Assert.That(
            fused.GetProperty("speedup_vs_naive").GetDouble(),
            Is.EqualTo(naive.GetProperty("ms_median").GetDouble() / fused.GetProperty("ms_median").GetDouble()).Within(1e-9).Percent,
            "fused/naive = naive median / fused median of the same run");
        Assert.That(fused.GetProperty("dense_ms_median").GetDouble(), Is.GreaterThan(0), "fused with every block listed is timed");
        Assert.That(naive.GetProperty("speedup_vs_naive").ValueKind, Is.EqualTo(JsonValueKind.Null));
        Assert.That(naive.GetProperty("dense_ms_median").ValueKind, Is.EqualTo(JsonValueKind.Null));
    }

    [Test]
    public void EveryBackendTimesTheBackwardAtTwoAndAHalfTimesTheForwardFlops()
    {
        var result = CliRunner.Run(
            "profile", "--pattern", "causal", "--shape", "12", "--heads", "1", "--dim", "4", "--block-size", "4",
            "--warmup", "0", "--repeat", "1", "--backward", "--no-dense", "--json");
        result.AssertSuccess();
        var lines = Lines(result);
        Assert.That(lines, Has.Length.EqualTo(6), "three backends, two passes");
        var forward = lines.Single(l => l.GetProperty("backend").GetString() == "fused" && l.GetProperty("pass").GetString() == "forward");
        using (Assert.EnterMultipleScope())
        {
            // Causal over 12 tokens: 12·13/2 = 78 pairs; 2·(4 + 4)·78 FLOPs forward.
            Assert.That(forward.GetProperty("allowed_pairs").GetInt64(), Is.EqualTo(78));
            Assert.That(forward.GetProperty("useful_gflop").GetDouble() * 1e9, Is.EqualTo(16.0 * 78).Within(1e-6));
            Assert.That(forward.GetProperty("dense_ms_median").ValueKind, Is.EqualTo(JsonValueKind.Null), "--no-dense");
            foreach (var backward in lines.Where(l => l.GetProperty("pass").GetString() == "backward"))
            {
                Assert.That(backward.GetProperty("useful_gflop").GetDouble(), Is.EqualTo(2.5 * forward.GetProperty("useful_gflop").GetDouble()).Within(1e-15));
                Assert.That(backward.GetProperty("ms_median").GetDouble(), Is.GreaterThan(0), backward.GetProperty("backend").GetString());
                Assert.That(backward.GetProperty("skipped_reason").ValueKind, Is.EqualTo(JsonValueKind.Null));
            }

            var fusedBackward = lines.Single(l => l.GetProperty("backend").GetString() == "fused" && l.GetProperty("pass").GetString() == "backward");
            var naiveBackward = lines.Single(l => l.GetProperty("backend").GetString() == "naive" && l.GetProperty("pass").GetString() == "backward");
            Assert.That(
                fusedBackward.GetProperty("speedup_vs_naive").GetDouble(),
                Is.EqualTo(naiveBackward.GetProperty("ms_median").GetDouble() / fusedBackward.GetProperty("ms_median").GetDouble()).Within(1e-9).Percent);
        }
    }

    [Test]
    public void ABackendThatCannotRunIsReportedAsSkippedWithItsReason()
    {
        // 50000 tokens: the reference backend's 2e9 pair-test limit is exceeded (B·H·Nq·Nk = 2.5e9); nothing is timed.
        var result = CliRunner.Run(
            "profile", "--pattern", "sliding:1,0", "--shape", "50000", "--heads", "1", "--dim", "1", "--block-size", "64",
            "--warmup", "0", "--repeat", "1", "--backend", "reference", "--no-dense", "--json");
        result.AssertSuccess();
        var line = Lines(result).Single();
        Assert.That(line.GetProperty("ms_median").ValueKind, Is.EqualTo(JsonValueKind.Null));
        Assert.That(line.GetProperty("skipped_reason").GetString(), Does.Contain("pair"));
    }

    [Test]
    public void TheTableReportsDensityAndTheFusedNaiveRatio()
    {
        var result = CliRunner.Run(
            "profile", "--pattern", "sliding:2,2", "--shape", "16", "--heads", "1", "--dim", "4", "--block-size", "4",
            "--warmup", "0", "--repeat", "1", "--backend", "fused,naive", "--no-dense");
        result.AssertSuccess();

        // |k − q| ≤ 2 over 16 tokens: 16·5 − 2·(2 + 1) = 74 pairs of 256.
        Assert.That(result.Stdout, Does.Contain("74 of 256 pairs allowed (28.91 %)"));
        Assert.That(result.Stdout, Does.Contain("fused/naive (forward, same run): "));
        Assert.That(result.Stdout, Does.Contain("useful GFLOP/s"));
        Assert.That(result.Stdout, Does.Not.Contain("reference  forward"));
    }

    [Test]
    public void TheFusedTilingIsPassedAndReported()
    {
        var result = CliRunner.Run(
            "profile", "--pattern", "sliding:3,0", "--shape", "20", "--heads", "1", "--dim", "4", "--block-size", "8",
            "--warmup", "0", "--repeat", "1", "--backend", "fused", "--tiling", "3/2", "--no-dense", "--json");
        result.AssertSuccess();
        var line = Lines(result).Single();
        Assert.That(line.GetProperty("tiling").GetString(), Is.EqualTo("3/2"));
        Assert.That(line.GetProperty("ms_median").GetDouble(), Is.GreaterThan(0));
    }

    private static IEnumerable<TestCaseData> Errors()
    {
        TestCaseData Case(string name, string contains, params string[] extra)
            => new TestCaseData(extra, contains).SetName($"ProfileBlockSparseError_{name}");
        yield return Case("KernelSize", "--kernel-size does not apply", "--pattern", "causal", "--kernel-size", "3");
        yield return Case("DryRun", "--dry-run does not apply", "--pattern", "causal", "--dry-run");
        yield return Case("Backend", "not a block-sparse backend", "--pattern", "causal", "--backend", "cpu");
        yield return Case("Pattern", "is not one of", "--pattern", "diagonal");
        yield return Case("PaddingCount", "one per batch entry", "--pattern", "padding:3,4,5", "--batch", "2");
        yield return Case("HaloCross", "is self-attention", "--pattern", "halo:2,1", "--key-tokens", "9");
        yield return Case("Unknown", "unknown option '--bogus'", "--pattern", "causal", "--bogus", "1");
        yield return Case("Tiling", "expected Q/K", "--pattern", "causal", "--tiling", "0/4");
    }

    [TestCaseSource(nameof(Errors))]
    public void ErrorsAreOneLine(string[] extra, string contains)
        => CliRunner.Run(["profile", "--shape", "8", "--heads", "1", "--dim", "4", .. extra]).AssertOneLineError(2, contains);

    /// <summary><c>natten run --export-mask</c>: the dense allowed-pair mask as bool .npy, checked pair by pair against each pattern's definition.</summary>
    [TestCaseSource(nameof(Cases))]
    public void ExportedMaskIsThePattern(Case c)
    {
        using var dir = new TempDirectory();
        c.Files?.Invoke(dir.Path);
        var rng = new Random(1);
        float[] Random(int n) => [.. Enumerable.Range(0, n).Select(_ => rng.NextSingle())];
        int[] queryShape = [c.Batch, .. c.Grid, c.Heads, 4];
        int[] keyShape = c.KeyTokens == c.QueryTokens ? [c.Batch, .. c.Grid, c.Heads, 4] : [c.Batch, c.KeyTokens, c.Heads, 4];
        Npy.Write(dir.File("q.npy"), queryShape, Random(queryShape.Aggregate(1, (a, b) => a * b)));
        Npy.Write(dir.File("k.npy"), keyShape, Random(keyShape.Aggregate(1, (a, b) => a * b)));
        Npy.Write(dir.File("v.npy"), keyShape, Random(keyShape.Aggregate(1, (a, b) => a * b)));
        CliRunner.Run(
            "run", "--query", dir.File("q.npy"), "--key", dir.File("k.npy"), "--value", dir.File("v.npy"), "--output", dir.File("o.npy"),
            "--pattern", c.Pattern.Replace("{dir}", dir.Path, StringComparison.Ordinal), "--block-size", c.BlockSize,
            "--export-mask", dir.File("mask.npy")).AssertSuccess();

        var (shape, values) = Npy.ReadIntegers(dir.File("mask.npy"));
        Assert.That(File.ReadAllBytes(dir.File("mask.npy")).AsSpan(0, 80).ToArray().Select(b => (char)b), Does.Contain('b').And.Contain('1'), "a bool array");
        Assert.That(shape[^2..], Is.EqualTo(new[] { c.QueryTokens, c.KeyTokens }));
        var batches = shape.Length == 4 ? shape[0] : 1;
        var heads = shape[^3];
        Assert.That(heads, Is.EqualTo(1).Or.EqualTo(c.Heads));
        Assert.That(batches, Is.EqualTo(1).Or.EqualTo(c.Batch));
        var mismatches = 0;
        for (var b = 0; b < c.Batch; b++)
        {
            for (var h = 0; h < c.Heads; h++)
            {
                var plane = ((batches == 1 ? 0 : b) * heads) + (heads == 1 ? 0 : h);
                for (var q = 0; q < c.QueryTokens; q++)
                {
                    for (var k = 0; k < c.KeyTokens; k++)
                    {
                        var exported = values[(((long)plane * c.QueryTokens) + q) * c.KeyTokens + k];
                        mismatches += (exported == 1) == c.Allows(b, h, q, k) ? 0 : 1;
                    }
                }
            }
        }

        Assert.That(mismatches, Is.Zero);
    }

    /// <summary><c>natten run --pattern … --dtype fp16|bf16</c> on float32 files: the inputs are rounded to the storage type and the result follows the Reference on the rounded inputs.</summary>
    [TestCase("fp16", 2e-3)]
    [TestCase("bf16", 2e-2)]
    public void RunRoundsTheInputsToTheDtype(string dtype, double tolerance)
    {
        using var dir = new TempDirectory();
        var rng = new Random(4);
        float[] Random(int n) => [.. Enumerable.Range(0, n).Select(_ => (rng.NextSingle() * 2) - 1)];
        int[] shape = [1, 24, 2, 8];
        var (q, k, v) = (Random(24 * 2 * 8), Random(24 * 2 * 8), Random(24 * 2 * 8));
        Npy.Write(dir.File("q.npy"), shape, q);
        Npy.Write(dir.File("k.npy"), shape, k);
        Npy.Write(dir.File("v.npy"), shape, v);
        CliRunner.Run(
            "run", "--query", dir.File("q.npy"), "--key", dir.File("k.npy"), "--value", dir.File("v.npy"), "--output", dir.File("o.npy"),
            "--pattern", "sliding:4,0", "--block-size", "8", "--dtype", dtype).AssertSuccess();
        double[] Round(float[] x) => [.. x.Select(f => dtype == "fp16" ? (double)(float)(Half)f : BFloat16Conversions.ToSingle(BFloat16Conversions.FromSingle(f)))];
        var expected = Natten.Reference.ReferenceAttention.DenseMasked(
            new Natten.Reference.MaskedAttentionDims(1, 24, 24, 2, 2, 8, 8, 1 / Math.Sqrt(8)), Round(q), Round(k), Round(v),
            (b, h, i, j) => j <= i && j >= i - 4);
        var output = Npy.Read(dir.File("o.npy")).Float32Data!;
        var error = output.Select((x, i) => Math.Abs(x - expected.Output[i])).Max();
        Assert.That(error, Is.LessThanOrEqualTo(tolerance));
        Assert.That(error, Is.GreaterThan(0), "the output is rounded to the storage type");
    }

    [Test]
    public void Bfloat16ForwardAndBackwardWithTimingKinds()
    {
        var result = CliRunner.Run(
            "profile", "--pattern", "sliding:8,0", "--shape", "32", "--heads", "2", "--dim", "16", "--block-size", "16",
            "--dtype", "bf16", "--backward", "--warmup", "0", "--repeat", "1", "--json");
        result.AssertSuccess();
        var lines = Lines(result);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(lines.Select(l => l.GetProperty("dtype").GetString()), Is.All.EqualTo("bf16"));
            foreach (var line in lines)
            {
                var backend = line.GetProperty("backend").GetString();
                Assert.That(line.GetProperty("timing").GetString(), Is.EqualTo(backend == "reference" ? "host" : "device-resident"), backend);
                Assert.That(line.GetProperty("ms_median").ValueKind, Is.EqualTo(JsonValueKind.Number), $"{backend} ran");
            }

            Assert.That(lines.Count(l => l.GetProperty("pass").GetString() == "backward"), Is.GreaterThanOrEqualTo(3));
        }
    }

    private static JsonElement[] Lines(CliResult result)
        => [.. result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement)];
}
