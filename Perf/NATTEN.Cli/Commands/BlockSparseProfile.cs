using System.Globalization;
using System.Text.Json;
using Natten.Backends;
using Natten.BlockSparse;
using Natten.Validation;

namespace Natten.Cli.Commands;

/// <summary>
/// <c>natten profile --pattern P</c>: times the block-sparse backends (fused, naive, reference) on one
/// random problem under a named pattern (the patterns of <c>natten run --pattern</c>) and reports the
/// median time, the useful FLOPs (only allowed (query, key) pairs count: <c>2 · (D + Dv)</c> per pair,
/// docs/SEMANTICS.md §8), GFLOP/s, the pattern's density (allowed pairs and listed blocks), the
/// fused/naive ratio and, for fused, the speedup over the same kernel with every block listed (dense),
/// all measured in the same run.
/// </summary>
internal static class BlockSparseProfile
{
    private static readonly CultureInfo _inv = CultureInfo.InvariantCulture;
    private static readonly string[] _dtypes = ["fp32", "fp16", "bf16"];
    private static readonly string[] _naOptions = ["--kernel-size", "--stride", "--dilation", "--causal", "--tiles", "--additional-tokens", "--max-configs", "--plot", "--plot-kernels"];
    private static readonly string[] _naFlags = ["--dry-run", "--optimize"];

    public const string Usage =
        """
        Block-sparse (natten profile --pattern P [options]): times the block-sparse backends (fused, naive,
        reference) under a pattern; useful FLOPs count only allowed (query, key) pairs, 2*(D+Dv) each.
          --pattern P         sliding:L,R | causal | halo:b,h | segments:FILE | documents:0,N1,.. |
                              strided:LOCAL,STRIDE[,DENSE] | padding:L[,L2..]  (as in natten run)
          --shape X           the token grid, e.g. 4096 or 32x32 (halo uses its axes; default 1024)
          --key-tokens N      keys per batch entry (default: the query tokens; cross attention for
                              sliding, causal and padding)
          --block-size B      Bq or BqxBk (default 64)
          --batch, --heads, --kv-heads, --dim, --value-dim, --dtype fp32|fp16|bf16, --scale, --seed
          --tiling Q/K        fused work split: Q queries (threads) per group, K keys staged per step
                              (default: the kernels' choice per block size and D)
          --backend NAMES     all (default) or a list of fused, naive, reference
          --backward          also time the backward (2.5x the forward's useful FLOPs)
          --no-dense          do not time fused with every block listed (no 'vs dense' column)
          --warmup N, --repeat N, --json  as above; JSON fields include allowed_pairs, pair_density,
                              block_density, useful_gflop, useful_gflops, speedup_vs_naive, speedup_vs_dense
        """;

    public static int Execute(ArgumentReader args, string pattern, TextWriter stdout)
    {
        foreach (var option in _naFlags)
        {
            if (args.GetFlag(option))
            {
                throw CliException.Usage($"{option} does not apply to block-sparse profiling (--pattern).");
            }
        }

        foreach (var option in _naOptions)
        {
            if (args.GetString(option) is not null)
            {
                throw CliException.Usage($"{option} does not apply to block-sparse profiling (--pattern).");
            }
        }

        var setup = ReadSetup(args, pattern);
        args.ThrowIfUnused("profile");
        using var mask = BlockSparseRun.FromPattern(pattern, setup.Shape, setup.Grid, setup.QueryBlock, setup.KeyBlock);
        var shape = setup.Shape;
        var flops = BlockSparseAttention.ForwardFlops(mask, shape); // validates shape against mask
        var stats = MaskStats.Of(mask, shape);
        using var inputs = new Inputs(shape, setup.ElementType, setup.Seed);
        var options = new BlockSparseOptions { Scale = setup.Scale, Tiling = setup.Tiling };

        var results = new List<ProfileCommand.Measurement>();
        using var denseMask = setup.Dense && setup.Backends.Contains(ProfileCommand.FusedBackendName) ? AllBlocks(mask) : null;
        foreach (var backend in setup.Backends)
        {
            results.Add(Measure(setup, inputs, mask, options, backend, AttentionPass.Forward, dense: false));
            if (denseMask is not null && backend == ProfileCommand.FusedBackendName)
            {
                results.Add(Measure(setup, inputs, denseMask, options, backend, AttentionPass.Forward, dense: true));
            }
        }

        if (setup.Backward)
        {
            inputs.PrepareBackward(mask, options);
            foreach (var backend in setup.Backends)
            {
                results.Add(Measure(setup, inputs, mask, options, backend, AttentionPass.Backward, dense: false));
                if (denseMask is not null && backend == ProfileCommand.FusedBackendName)
                {
                    inputs.PrepareBackward(denseMask, options);
                    results.Add(Measure(setup, inputs, denseMask, options, backend, AttentionPass.Backward, dense: true));
                    inputs.PrepareBackward(mask, options);
                }
            }
        }

        var report = new Report(setup, mask, stats, flops, results);
        if (setup.Json)
        {
            report.WriteJson(stdout);
        }
        else
        {
            report.WriteTable(stdout);
        }

        return ExitCodes.Success;
    }

    /// <summary>The same sizes with every block listed and full: the fused kernel's dense attention.</summary>
    private static BlockMask AllBlocks(BlockMask mask)
    {
        var flags = new bool[(long)mask.QueryBlocks * mask.KeyBlocks];
        Array.Fill(flags, true);
        return BlockMask.FromBlocks(flags, mask.QueryTokens, mask.KeyTokens, mask.QueryBlockSize, mask.KeyBlockSize);
    }

    private static ProfileCommand.Measurement Measure(
        Setup setup, Inputs inputs, BlockMask mask, BlockSparseOptions options, string backend, AttentionPass pass, bool dense)
    {
        var passName = pass == AttentionPass.Forward ? "forward" : "backward";
        var problem = ProblemValidator.ValidateBlockSparse(setup.Shape, mask, options, setup.ElementType);
        if (!BlockSparseBackends.Find(backend)!.CanRun(problem, pass, out var reason))
        {
            return ProfileCommand.Measurement.Skipped(backend, passName, dense, reason);
        }

        var run = options with { Backend = backend };
        if (Inputs.IsDeviceResident(backend))
        {
            Action queue = pass == AttentionPass.Forward ? () => inputs.Forward(mask, run, synchronize: false) : () => inputs.Backward(mask, run, synchronize: false);
            return ProfileCommand.Time(backend, passName, dense, queue, setup.Warmup, setup.Repeat, ProfileCommand.DeviceCallsPerSample, inputs.Synchronize);
        }

        Action call = pass == AttentionPass.Forward ? () => inputs.Forward(mask, run) : () => inputs.Backward(mask, run);
        return ProfileCommand.Time(backend, passName, dense, call, setup.Warmup, setup.Repeat);
    }

    private static Setup ReadSetup(ArgumentReader args, string pattern)
    {
        var grid = args.GetAxisValues("--shape") is { } g
            ? (g.IsUniform ? [g[0]] : Enumerable.Range(0, g.Count).Select(a => g[a]).ToArray())
            : [1024];
        var tokens = grid.Aggregate(1L, (a, b) => a * b);
        if (tokens > int.MaxValue)
        {
            throw CliException.Usage($"--shape {string.Join('x', grid)} has {tokens} tokens; at most {int.MaxValue}.");
        }

        var keyTokens = args.GetInt("--key-tokens", (int)tokens, min: 1);
        var (queryBlock, keyBlock) = BlockSparseRun.ReadBlockSize(args.GetAxisValues("--block-size"));
        var batch = args.GetInt("--batch", 1, min: 1);
        var heads = args.GetInt("--heads", 4, min: 1);
        var kvHeads = args.GetInt("--kv-heads", heads, min: 1);
        if (heads % kvHeads != 0)
        {
            throw CliException.Usage($"--heads ({heads}) must be a multiple of --kv-heads ({kvHeads}).");
        }

        var dim = args.GetInt("--dim", 32, min: 1);
        var valueDim = args.GetInt("--value-dim", dim, min: 1);
        var dtype = args.GetChoice("--dtype", _dtypes, "fp32");
        BlockSparseTiling? tiling = null;
        if (args.GetString("--tiling") is { } tilingText)
        {
            var parts = tilingText.Split('/');
            if (parts.Length != 2
                || !int.TryParse(parts[0], NumberStyles.None, _inv, out var tq) || !int.TryParse(parts[1], NumberStyles.None, _inv, out var tk) || tq < 1 || tk < 1)
            {
                throw CliException.Usage($"--tiling '{tilingText}': expected Q/K with two positive integers, e.g. 16/32.");
            }

            tiling = new BlockSparseTiling(tq, tk);
        }

        var backendArg = args.GetString("--backend");
        var names = BlockSparseAttention.BackendNames;
        var backends = backendArg is null || string.Equals(backendArg, "all", StringComparison.OrdinalIgnoreCase)
            ? names
            : backendArg.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                .Select(n => names.FirstOrDefault(k => string.Equals(k, n, StringComparison.OrdinalIgnoreCase))
                    ?? throw CliException.Usage($"--backend: '{n}' is not a block-sparse backend; known: {string.Join(", ", names)}."))
                .Distinct().ToArray();
        return new Setup
        {
            Pattern = pattern,
            Grid = grid,
            Shape = new BlockSparseShape(batch, (int)tokens, keyTokens, heads, dim) { KvHeads = kvHeads, ValueDim = valueDim },
            QueryBlock = queryBlock,
            KeyBlock = keyBlock,
            Scale = args.GetDouble("--scale"),
            Tiling = tiling,
            ElementType = dtype switch { "fp16" => ElementType.Float16, "bf16" => ElementType.BFloat16, _ => ElementType.Float32 },
            Backends = backends,
            Backward = args.GetFlag("--backward"),
            Dense = !args.GetFlag("--no-dense"),
            Warmup = args.GetInt("--warmup", 1, min: 0),
            Repeat = args.GetInt("--repeat", 3, min: 1),
            Seed = args.GetInt("--seed", 0),
            Json = args.GetFlag("--json"),
        };
    }

    private sealed record Setup
    {
        public required string Pattern { get; init; }

        public required int[] Grid { get; init; }

        public required BlockSparseShape Shape { get; init; }

        public required int QueryBlock { get; init; }

        public required int KeyBlock { get; init; }

        public required double? Scale { get; init; }

        public required BlockSparseTiling? Tiling { get; init; }

        public required ElementType ElementType { get; init; }

        public required IReadOnlyList<string> Backends { get; init; }

        public required bool Backward { get; init; }

        public required bool Dense { get; init; }

        public required int Warmup { get; init; }

        public required int Repeat { get; init; }

        public required int Seed { get; init; }

        public required bool Json { get; init; }

        public string DType => ElementType switch { ElementType.Float16 => "fp16", ElementType.BFloat16 => "bf16", _ => "fp32" };
    }

    /// <summary>
    /// The pattern's size over every (batch entry, head) of the problem: allowed pairs (Σ|A(q)|), all pairs,
    /// listed blocks (full and partial) and all blocks.
    /// </summary>
    internal readonly record struct MaskStats(long AllowedPairs, long TotalPairs, long ListedBlocks, long PartialBlocks, long TotalBlocks)
    {
        public double PairDensity => (double)AllowedPairs / TotalPairs;

        public double BlockDensity => (double)ListedBlocks / TotalBlocks;

        public static MaskStats Of(BlockMask mask, BlockSparseShape shape)
        {
            long allowed = 0, listed = 0, partial = 0;
            for (var b = 0; b < shape.Batch; b++)
            {
                for (var h = 0; h < shape.Heads; h++)
                {
                    allowed += mask.AllowedPairs(b, h);
                    for (var qb = 0; qb < mask.QueryBlocks; qb++)
                    {
                        var blocks = mask.GetKeyBlocks(b, h, qb);
                        listed += blocks.Count;
                        partial += blocks.Count(x => x.Kind == BlockKind.Partial);
                    }
                }
            }

            var planes = (long)shape.Batch * shape.Heads;
            return new MaskStats(allowed, planes * shape.QueryTokens * shape.KeyTokens, listed, partial, planes * mask.QueryBlocks * mask.KeyBlocks);
        }
    }

    /// <summary>
    /// Seeded random Q, K, V, dO (uniform in [−1, 1), rounded to the storage type) and the destinations. Backends
    /// that take device tensors (fused, naive) are timed on copies resident on the default accelerator, uploaded
    /// once outside the timed region, each call synchronised; the reference backend on host spans.
    /// </summary>
    private sealed class Inputs : IDisposable
    {
        private readonly BlockSparseShape _shape;
        private readonly ElementType _type;
        private readonly Tensor _query, _key, _value, _outputGrad, _output, _queryGrad, _keyGrad, _valueGrad;
        private readonly float[] _lse;
        private DeviceCopies? _device;
        private bool _residentForwardStale = true;

        public Inputs(BlockSparseShape shape, ElementType type, int seed)
        {
            _shape = shape;
            _type = type;
            var rng = new Random(seed);
            long queryRows = (long)shape.Batch * shape.QueryTokens, keyRows = (long)shape.Batch * shape.KeyTokens;
            _query = Tensor.Random(rng, queryRows * shape.Heads * shape.HeadDim, type);
            _key = Tensor.Random(rng, keyRows * shape.KvHeads * shape.HeadDim, type);
            _value = Tensor.Random(rng, keyRows * shape.KvHeads * shape.ValueDim, type);
            _outputGrad = Tensor.Random(rng, queryRows * shape.Heads * shape.ValueDim, type);
            _output = Tensor.Zero(queryRows * shape.Heads * shape.ValueDim, type);
            _lse = new float[queryRows * shape.Heads];
            _queryGrad = Tensor.Zero(_query.Length, type);
            _keyGrad = Tensor.Zero(_key.Length, type);
            _valueGrad = Tensor.Zero(_value.Length, type);
        }

        /// <summary>Whether runs of <paramref name="backend"/> are timed on device-resident tensors.</summary>
        public static bool IsDeviceResident(string? backend) => backend is not null && BlockSparseBackends.Find(backend) is IDeviceBlockSparseBackend;

        /// <summary>Waits for the device-resident work queued so far.</summary>
        public void Synchronize() => _device?.Synchronize();

        public void Forward(BlockMask mask, BlockSparseOptions options, bool synchronize = true)
        {
            if (IsDeviceResident(options.Backend))
            {
                switch (_type)
                {
                    case ElementType.Float16:
                        DeviceForward<Half>(mask, options);
                        break;
                    case ElementType.BFloat16:
                        DeviceForward<ushort>(mask, options);
                        break;
                    default:
                        DeviceForward<float>(mask, options);
                        break;
                }

                if (synchronize)
                {
                    Synchronize();
                }

                return;
            }

            switch (_type)
            {
                case ElementType.Float16:
                    BlockSparseAttention.Forward(_query.F16, _key.F16!, _value.F16!, mask, _shape, options, _output.F16!, _lse);
                    break;
                case ElementType.BFloat16:
                    BlockSparseAttention.ForwardBFloat16(_query.Bf16, _key.Bf16!, _value.Bf16!, mask, _shape, options, _output.Bf16!, _lse);
                    break;
                default:
                    BlockSparseAttention.Forward(_query.F32, _key.F32!, _value.F32!, mask, _shape, options, _output.F32!, _lse);
                    break;
            }
        }

        /// <summary>The output and LSE the backward needs, from the first backend that runs the forward (on host spans).</summary>
        public void PrepareBackward(BlockMask mask, BlockSparseOptions options)
        {
            Forward(mask, options with { Backend = null });
            _residentForwardStale = true;
        }

        public void Backward(BlockMask mask, BlockSparseOptions options, bool synchronize = true)
        {
            if (IsDeviceResident(options.Backend))
            {
                switch (_type)
                {
                    case ElementType.Float16:
                        DeviceBackward<Half>(mask, options);
                        break;
                    case ElementType.BFloat16:
                        DeviceBackward<ushort>(mask, options);
                        break;
                    default:
                        DeviceBackward<float>(mask, options);
                        break;
                }

                if (synchronize)
                {
                    Synchronize();
                }

                return;
            }

            switch (_type)
            {
                case ElementType.Float16:
                    BlockSparseAttention.Backward(
                        _query.F16, _key.F16!, _value.F16!, _output.F16!, _lse, _outputGrad.F16!, mask, _shape, options, _queryGrad.F16!, _keyGrad.F16!, _valueGrad.F16!);
                    break;
                case ElementType.BFloat16:
                    BlockSparseAttention.BackwardBFloat16(
                        _query.Bf16, _key.Bf16!, _value.Bf16!, _output.Bf16!, _lse, _outputGrad.Bf16!, mask, _shape, options, _queryGrad.Bf16!, _keyGrad.Bf16!, _valueGrad.Bf16!);
                    break;
                default:
                    BlockSparseAttention.Backward(
                        _query.F32, _key.F32!, _value.F32!, _output.F32!, _lse, _outputGrad.F32!, mask, _shape, options, _queryGrad.F32!, _keyGrad.F32!, _valueGrad.F32!);
                    break;
            }
        }

        public void Dispose() => _device?.Dispose();

        private void DeviceForward<T>(BlockMask mask, BlockSparseOptions options)
            where T : unmanaged
        {
            var d = _device ??= new DeviceCopies();
            var (q, k, v, o, lse) = (d.Input<T>(_query), d.Input<T>(_key), d.Input<T>(_value), d.Output<T>(_output), d.Output(_lse));
            if (_type == ElementType.BFloat16)
            {
                BlockSparseAttention.ForwardBFloat16(DeviceCopies.Bits(q), DeviceCopies.Bits(k), DeviceCopies.Bits(v), mask, _shape, options, DeviceCopies.Bits(o), lse);
            }
            else
            {
                BlockSparseAttention.Forward(q, k, v, mask, _shape, options, o, lse);
            }
        }

        private void DeviceBackward<T>(BlockMask mask, BlockSparseOptions options)
            where T : unmanaged
        {
            var d = _device ??= new DeviceCopies();
            if (_residentForwardStale)
            {
                d.Refresh<T>(_output);
                d.Refresh(_lse);
                _residentForwardStale = false;
            }

            var (q, k, v, o, lse, dO) = (d.Input<T>(_query), d.Input<T>(_key), d.Input<T>(_value), d.Output<T>(_output), d.Output(_lse), d.Input<T>(_outputGrad));
            var (dq, dk, dv) = (d.Output<T>(_queryGrad), d.Output<T>(_keyGrad), d.Output<T>(_valueGrad));
            if (_type == ElementType.BFloat16)
            {
                BlockSparseAttention.BackwardBFloat16(
                    DeviceCopies.Bits(q), DeviceCopies.Bits(k), DeviceCopies.Bits(v), DeviceCopies.Bits(o), lse, DeviceCopies.Bits(dO), mask, _shape, options,
                    DeviceCopies.Bits(dq), DeviceCopies.Bits(dk), DeviceCopies.Bits(dv));
            }
            else
            {
                BlockSparseAttention.Backward(q, k, v, o, lse, dO, mask, _shape, options, dq, dk, dv);
            }
        }
    }

    private sealed class Report(Setup setup, BlockMask mask, MaskStats stats, double forwardFlops, List<ProfileCommand.Measurement> results)
    {
        private IEnumerable<ProfileCommand.Measurement> Problems => results.Where(m => !m.Dense);

        private static string Machine => ProfileCommand.MachineDescription();

        public void WriteTable(TextWriter stdout)
        {
            var s = setup.Shape;
            stdout.WriteLine(
                $"natten profile (block-sparse): pattern {setup.Pattern}, grid {string.Join('x', setup.Grid)}, Nq={s.QueryTokens} Nk={s.KeyTokens}, "
              + $"blocks {setup.QueryBlock}x{setup.KeyBlock}{(setup.Tiling is { } t ? $", fused tiling {t.Queries}/{t.Keys}" : string.Empty)}, B={s.Batch} H={s.Heads}/{s.KvHeads} D={s.HeadDim} Dv={s.ValueDim}, {setup.DType}");
            stdout.WriteLine(
                $"mask: {stats.AllowedPairs} of {stats.TotalPairs} pairs allowed ({Pct(stats.PairDensity)}), {stats.ListedBlocks} of {stats.TotalBlocks} blocks "
              + $"listed ({Pct(stats.BlockDensity)}, {stats.PartialBlocks} partial); useful work: forward {Num(forwardFlops / 1e9)} GFLOP"
              + (setup.Backward ? $", backward {Num(2.5 * forwardFlops / 1e9)} GFLOP" : string.Empty));
            stdout.WriteLine(
                $"machine: {Machine}; accelerator: {ProfileCommand.AcceleratorName()}; median of {setup.Repeat} after {setup.Warmup} warm-up; "
              + $"{string.Join(", ", setup.Backends.Where(Inputs.IsDeviceResident))} timed on device-resident tensors (uploaded once, {ProfileCommand.DeviceCallsPerSample} back-to-back call(s) per sample, then one synchronisation), the others on host spans"
              + (ProfileCommand.IsOptimizedBuild ? string.Empty : "; WARNING: unoptimized (Debug) build, use -c Release for real timings"));
            if (results.Any(m => m.Dense))
            {
                stdout.WriteLine("dense: fused with every block listed and full (same sizes), timed in this run");
            }

            stdout.WriteLine();
            var rows = new List<string[]> { new[] { "backend", "pass", "median ms", "min ms", "useful GFLOP/s", "vs naive", "vs reference", "dense ms", "vs dense" } };
            foreach (var m in Problems.Where(m => m.Ran))
            {
                var dense = DenseOf(m);
                rows.Add(
                [
                    m.Backend, m.Pass, m.MedianMs.ToString("F3", _inv), m.MinMs.ToString("F3", _inv), Num(Gflops(m)),
                    X(Speedup(m, ProfileCommand.NaiveBackendName)), X(Speedup(m, ProfileCommand.ReferenceBackendName)),
                    dense is { Ran: true } ? dense.MedianMs.ToString("F3", _inv) : "n/a", X(SpeedupVsDense(m)),
                ]);
            }

            var widths = Enumerable.Range(0, rows[0].Length).Select(c => rows.Max(r => r[c].Length)).ToArray();
            foreach (var row in rows)
            {
                stdout.WriteLine(string.Join("  ", row.Select((cell, c) => c < 2 ? cell.PadRight(widths[c]) : cell.PadLeft(widths[c]))).TrimEnd());
            }

            foreach (var m in results.Where(m => !m.Ran))
            {
                stdout.WriteLine($"skipped {m.Backend} {m.Pass}{(m.Dense ? " (dense)" : string.Empty)}: {m.SkippedReason}");
            }

            stdout.WriteLine();
            foreach (var m in Problems.Where(m => m.Ran && m.Backend == ProfileCommand.FusedBackendName))
            {
                if (Speedup(m, ProfileCommand.NaiveBackendName) is { } ratio)
                {
                    stdout.WriteLine($"fused/naive ({m.Pass}, same run): {X(ratio)} (naive median / fused median)");
                }
            }

            foreach (var backend in setup.Backends)
            {
                stdout.WriteLine($"{backend}: {BlockSparseBackends.Find(backend)!.Description}");
            }
        }

        public void WriteJson(TextWriter stdout)
        {
            foreach (var m in Problems)
            {
                stdout.WriteLine(ProfileJson.Line(json => Write(json, m)));
            }
        }

        private void Write(Utf8JsonWriter json, ProfileCommand.Measurement m)
        {
            var s = setup.Shape;
            json.WriteStartObject();
            json.WriteString("backend", m.Backend);
            json.WriteString("pass", m.Pass);
            json.WriteString("timing", Inputs.IsDeviceResident(m.Backend) ? "device-resident" : "host");
            json.WriteString("pattern", setup.Pattern);
            json.WriteString("dtype", setup.DType);
            ProfileJson.WriteArray(json, "grid", setup.Grid);
            json.WriteNumber("batch", s.Batch);
            json.WriteNumber("query_tokens", s.QueryTokens);
            json.WriteNumber("key_tokens", s.KeyTokens);
            json.WriteNumber("heads", s.Heads);
            json.WriteNumber("kv_heads", s.KvHeads);
            json.WriteNumber("dim", s.HeadDim);
            json.WriteNumber("value_dim", s.ValueDim);
            json.WriteNumber("query_block", setup.QueryBlock);
            json.WriteNumber("key_block", setup.KeyBlock);
            json.WriteNumber("mask_batches", mask.Batches);
            json.WriteNumber("mask_heads", mask.Heads);
            ProfileJson.WriteNumberOrNull(json, "scale", setup.Scale);
            if (setup.Tiling is { } t)
            {
                json.WriteString("tiling", $"{t.Queries}/{t.Keys}");
            }
            else
            {
                json.WriteNull("tiling");
            }

            json.WriteNumber("warmup", setup.Warmup);
            json.WriteNumber("repeat", setup.Repeat);
            json.WriteNumber("seed", setup.Seed);
            json.WriteNumber("allowed_pairs", stats.AllowedPairs);
            json.WriteNumber("total_pairs", stats.TotalPairs);
            json.WriteNumber("pair_density", stats.PairDensity);
            json.WriteNumber("blocks_listed", stats.ListedBlocks);
            json.WriteNumber("blocks_partial", stats.PartialBlocks);
            json.WriteNumber("blocks_total", stats.TotalBlocks);
            json.WriteNumber("block_density", stats.BlockDensity);
            json.WriteNumber("useful_gflop", Flops(m) / 1e9);
            ProfileJson.WriteNumberOrNull(json, "ms_median", m.Ran ? m.MedianMs : null);
            ProfileJson.WriteNumberOrNull(json, "ms_min", m.Ran ? m.MinMs : null);
            ProfileJson.WriteNumberOrNull(json, "useful_gflops", m.Ran ? Gflops(m) : null);
            ProfileJson.WriteNumberOrNull(json, "useful_tflops", m.Ran ? Gflops(m) / 1e3 : null);
            ProfileJson.WriteNumberOrNull(json, "speedup_vs_naive", Speedup(m, ProfileCommand.NaiveBackendName));
            ProfileJson.WriteNumberOrNull(json, "speedup_vs_reference", Speedup(m, ProfileCommand.ReferenceBackendName));
            var dense = DenseOf(m);
            ProfileJson.WriteNumberOrNull(json, "dense_ms_median", dense is { Ran: true } ? dense.MedianMs : null);
            ProfileJson.WriteNumberOrNull(json, "speedup_vs_dense", SpeedupVsDense(m));
            if (m.Ran)
            {
                json.WriteNull("skipped_reason");
            }
            else
            {
                json.WriteString("skipped_reason", m.SkippedReason);
            }

            json.WriteString("machine", Machine);
            json.WriteString("accelerator", ProfileCommand.AcceleratorName());
            json.WriteBoolean("optimized_build", ProfileCommand.IsOptimizedBuild);
            json.WriteEndObject();
        }

        private double Flops(ProfileCommand.Measurement m) => m.Pass == "backward" ? 2.5 * forwardFlops : forwardFlops;

        private double Gflops(ProfileCommand.Measurement m) => Flops(m) / (m.MedianMs * 1e-3) / 1e9;

        /// <summary>The baseline backend's median over this one's, same pass; null when either did not run.</summary>
        private double? Speedup(ProfileCommand.Measurement m, string baseline)
        {
            var other = Problems.FirstOrDefault(r => r.Pass == m.Pass && r.Backend == baseline && r.Ran);
            return other is null || !m.Ran || m.MedianMs <= 0 || m.Backend == baseline ? null : other.MedianMs / m.MedianMs;
        }

        private ProfileCommand.Measurement? DenseOf(ProfileCommand.Measurement m) => results.Find(r => r.Dense && r.Backend == m.Backend && r.Pass == m.Pass);

        private double? SpeedupVsDense(ProfileCommand.Measurement m)
            => DenseOf(m) is { Ran: true } dense && m.Ran && m.MedianMs > 0 ? dense.MedianMs / m.MedianMs : null;

        private static string X(double? x) => x is { } v && double.IsFinite(v) ? v.ToString("F2", _inv) + "x" : "n/a";

        private static string Pct(double x) => (100 * x).ToString("F2", _inv) + " %";

        private static string Num(double x) => x >= 0.01 || x == 0 ? x.ToString("F3", _inv) : x.ToString("0.00e+0", _inv);
    }
}
