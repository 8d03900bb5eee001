using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text.Json;

namespace Natten.Cli.Commands;

/// <summary>
/// <c>natten profile</c>: times each backend on one random problem and reports the median time,
/// useful TFLOP/s (<see cref="AttentionFlops"/>) and the speedup over the reference backend.
/// </summary>
internal static class ProfileCommand
{
    private static readonly string[] _dtypes = ["fp32", "fp16"];

    public static string UsageText =>
        $"""
        Usage: natten profile [options]

        Times every backend (or one) on a random problem: median of --repeat runs after --warmup runs.
        Reports useful TFLOP/s (only the (query, key) pairs a query may attend to count) and the
        speedup over the 'reference' backend.

        Problem:
          --shape X           spatial extents, e.g. 1024, 32x32 or 8x16x16 (default 32x32)
        {ProblemOptions.Usage}
          --scale S           score scale (default 1/sqrt(D))
          --batch B           batch size (default 1)
          --heads H           query heads (default 4)
          --kv-heads H        key/value heads, must divide --heads (default: --heads)
          --dim D             query/key head dimension (default 32)
          --value-dim D       value head dimension (default: --dim)
          --additional-tokens N   extra key/value tokens every query attends to (default 0)
          --dtype T           fp32 or fp16 (default fp32)

        Measurement:
          --backend NAMES     all (default), or a comma-separated list of: {string.Join(", ", AttentionBackends.Names)}
          --backward          also time the backward pass
          --warmup N          untimed runs first (default 1)
          --repeat N          timed runs; the median is reported (default 3)
          --seed N            random inputs' seed (default 0)
          --json              one JSON object per line and measurement instead of a table
        """;

    public static int Execute(ArgumentReader args, TextWriter stdout)
    {
        if (args.WantsHelp)
        {
            stdout.WriteLine(UsageText);
            return ExitCodes.Success;
        }

        var setup = ReadSetup(args);
        args.ThrowIfUnused("profile");

        // Validates the problem (ArgumentException -> exit code 2) before any allocation.
        var forwardFlops = AttentionFlops.Forward(setup.Shape, setup.Options);
        var backwardFlops = AttentionFlops.Backward(setup.Shape, setup.Options);

        var inputs = new ProfileInputs(setup.Shape, setup.IsFloat16, setup.Seed);
        var results = new List<Measurement>();
        foreach (var backend in setup.Backends)
        {
            results.Add(MeasureForward(setup, inputs, backend));
        }

        if (setup.Backward)
        {
            var prepared = inputs.TryPrepareBackward(setup.Options, out var why);
            foreach (var backend in setup.Backends)
            {
                results.Add(prepared ? MeasureBackward(setup, inputs, backend) : Measurement.Skipped(backend, "backward", why));
            }
        }

        var report = new Report(setup, forwardFlops, backwardFlops, results, MachineDescription());
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

    /// <summary>The host the timings come from (the library does not expose an accelerator description yet).</summary>
    internal static string MachineDescription()
        => $"CPU {Environment.ProcessorCount} cores {RuntimeInformation.ProcessArchitecture}, "
         + $"{RuntimeInformation.OSDescription}, {RuntimeInformation.FrameworkDescription}";

    /// <summary>Whether the library was compiled with optimizations (a Debug build's timings mislead).</summary>
    internal static bool IsOptimizedBuild
        => typeof(NeighborhoodAttention).Assembly.GetCustomAttribute<DebuggableAttribute>() is not { IsJITOptimizerDisabled: true };

    private static ProfileSetup ReadSetup(ArgumentReader args)
    {
        var spatialArg = args.GetAxisValues("--shape") ?? new AxisValues(32, 32);
        int[] spatial = spatialArg.IsUniform ? [spatialArg[0]] : [.. Enumerable.Range(0, spatialArg.Count).Select(a => spatialArg[a])];
        var options = ProblemOptions.Read(args, defaultKernelSize: 7);
        if (args.GetDouble("--scale") is { } scale)
        {
            options = options with { Scale = scale };
        }

        var batch = args.GetInt("--batch", 1, min: 1);
        var heads = args.GetInt("--heads", 4, min: 1);
        var kvHeads = args.GetInt("--kv-heads", heads, min: 1);
        if (heads % kvHeads != 0)
        {
            throw CliException.Usage($"--heads ({heads}) must be a multiple of --kv-heads ({kvHeads}).");
        }

        var dim = args.GetInt("--dim", 32, min: 1);
        var valueDim = args.GetInt("--value-dim", dim, min: 1);
        var additional = args.GetInt("--additional-tokens", 0, min: 0);
        var dtype = args.GetChoice("--dtype", _dtypes, "fp32");
        var backendArg = args.GetString("--backend") ?? "all";
        var backends = string.Equals(backendArg, "all", StringComparison.OrdinalIgnoreCase)
            ? AttentionBackends.Names
            : backendArg.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                .Select(ProblemOptions.ResolveBackend).Distinct().ToArray();

        var shape = new AttentionShape(batch, AxisValues.PerAxis(spatial), heads, dim)
        {
            KvHeads = kvHeads,
            ValueDim = valueDim,
            AdditionalTokens = additional,
        };
        return new ProfileSetup
        {
            Shape = shape,
            Options = options,
            IsFloat16 = dtype == "fp16",
            Backends = backends,
            Backward = args.GetFlag("--backward"),
            Warmup = args.GetInt("--warmup", 1, min: 0),
            Repeat = args.GetInt("--repeat", 3, min: 1),
            Seed = args.GetInt("--seed", 0),
            Json = args.GetFlag("--json"),
        };
    }

    private static Measurement MeasureForward(ProfileSetup setup, ProfileInputs inputs, string backend)
    {
        var elementType = setup.IsFloat16 ? ElementType.Float16 : ElementType.Float32;
        if (!AttentionBackends.CanRun(backend, setup.Shape, setup.Options, elementType, backward: false, out var reason))
        {
            return Measurement.Skipped(backend, "forward", reason);
        }

        var options = setup.Options with { Backend = backend };
        return Time(backend, "forward", () => inputs.Forward(options), setup.Warmup, setup.Repeat);
    }

    private static Measurement MeasureBackward(ProfileSetup setup, ProfileInputs inputs, string backend)
    {
        var elementType = setup.IsFloat16 ? ElementType.Float16 : ElementType.Float32;
        if (!AttentionBackends.CanRun(backend, setup.Shape, setup.Options, elementType, backward: true, out var reason))
        {
            return Measurement.Skipped(backend, "backward", reason);
        }

        var options = setup.Options with { Backend = backend };
        return Time(backend, "backward", () => inputs.Backward(options), setup.Warmup, setup.Repeat);
    }

    private static Measurement Time(string backend, string pass, Action run, int warmup, int repeat)
    {
        for (var i = 0; i < warmup; i++)
        {
            run();
        }

        var ms = new double[repeat];
        for (var i = 0; i < repeat; i++)
        {
            var start = Stopwatch.GetTimestamp();
            run();
            ms[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }

        Array.Sort(ms);
        var median = repeat % 2 == 1 ? ms[repeat / 2] : (ms[(repeat / 2) - 1] + ms[repeat / 2]) / 2;
        return new Measurement(backend, pass, median, ms[0], null);
    }

    private sealed record ProfileSetup
    {
        public required AttentionShape Shape { get; init; }

        public required NeighborhoodAttentionOptions Options { get; init; }

        public required bool IsFloat16 { get; init; }

        public required IReadOnlyList<string> Backends { get; init; }

        public required bool Backward { get; init; }

        public required int Warmup { get; init; }

        public required int Repeat { get; init; }

        public required int Seed { get; init; }

        public required bool Json { get; init; }

        public string DType => IsFloat16 ? "fp16" : "fp32";
    }

    /// <summary>One timed (or skipped) backend and pass; <see cref="SkippedReason"/> is set when it could not run.</summary>
    private sealed record Measurement(string Backend, string Pass, double MedianMs, double MinMs, string? SkippedReason)
    {
        public static Measurement Skipped(string backend, string pass, string reason) => new(backend, pass, double.NaN, double.NaN, reason);
    }

    /// <summary>Random, seeded tensors of one problem and the destinations each pass writes.</summary>
    private sealed class ProfileInputs
    {
        private readonly AttentionShape _shape;
        private readonly Tensor _query, _key, _value, _additionalKey, _additionalValue, _outputGrad;
        private readonly Tensor _output, _queryGrad, _keyGrad, _valueGrad, _additionalKeyGrad, _additionalValueGrad;
        private readonly float[] _lse;

        public ProfileInputs(AttentionShape shape, bool isFloat16, int seed)
        {
            _shape = shape;
            var rng = new Random(seed);
            long tokens = 1;
            for (var a = 0; a < shape.Rank; a++)
            {
                tokens *= shape.Spatial[a];
            }

            long rows = shape.Batch * tokens, extra = (long)shape.Batch * shape.AdditionalTokens;
            Tensor Random(long count) => Tensor.Random(rng, count, isFloat16);
            Tensor Zero(long count) => Tensor.Zero(count, isFloat16);
            _query = Random(rows * shape.Heads * shape.HeadDim);
            _key = Random(rows * shape.KvHeads * shape.HeadDim);
            _value = Random(rows * shape.KvHeads * shape.ValueDim);
            _additionalKey = Random(extra * shape.KvHeads * shape.HeadDim);
            _additionalValue = Random(extra * shape.KvHeads * shape.ValueDim);
            _outputGrad = Random(rows * shape.Heads * shape.ValueDim);
            _output = Zero(rows * shape.Heads * shape.ValueDim);
            _lse = Tensor.Zero(rows * shape.Heads, isFloat16: false).F32!;
            _queryGrad = Zero(_query.Length);
            _keyGrad = Zero(_key.Length);
            _valueGrad = Zero(_value.Length);
            _additionalKeyGrad = Zero(_additionalKey.Length);
            _additionalValueGrad = Zero(_additionalValue.Length);
        }

        private bool HasAdditional => _shape.AdditionalTokens > 0;

        public void Forward(NeighborhoodAttentionOptions options)
        {
            if (_query.F16 is not null)
            {
                if (HasAdditional)
                {
                    NeighborhoodAttention.Forward(
                        _query.F16, _key.F16!, _value.F16!, _additionalKey.F16!, _additionalValue.F16!, _shape, options, _output.F16!, _lse);
                }
                else
                {
                    NeighborhoodAttention.Forward(_query.F16, _key.F16!, _value.F16!, _shape, options, _output.F16!, _lse);
                }
            }
            else if (HasAdditional)
            {
                NeighborhoodAttention.Forward(
                    _query.F32!, _key.F32!, _value.F32!, _additionalKey.F32!, _additionalValue.F32!, _shape, options, _output.F32!, _lse);
            }
            else
            {
                NeighborhoodAttention.Forward(_query.F32!, _key.F32!, _value.F32!, _shape, options, _output.F32!, _lse);
            }
        }

        /// <summary>Computes the forward output and LSE the backward pass reads (with the automatic backend).</summary>
        public bool TryPrepareBackward(NeighborhoodAttentionOptions options, out string reason)
        {
            if (_query.F16 is not null && HasAdditional)
            {
                reason = "the library has no float16 backward with additional tokens";
                return false;
            }

            try
            {
                Forward(options with { Backend = null });
            }
            catch (NotSupportedException ex)
            {
                reason = $"no forward output to differentiate: {ex.Message}";
                return false;
            }

            reason = string.Empty;
            return true;
        }

        public void Backward(NeighborhoodAttentionOptions options)
        {
            if (_query.F16 is not null)
            {
                NeighborhoodAttention.Backward(
                    _query.F16, _key.F16!, _value.F16!, _output.F16!, _lse, _outputGrad.F16!, _shape, options,
                    _queryGrad.F16!, _keyGrad.F16!, _valueGrad.F16!);
            }
            else if (HasAdditional)
            {
                NeighborhoodAttention.Backward(
                    _query.F32!, _key.F32!, _value.F32!, _additionalKey.F32!, _additionalValue.F32!,
                    _output.F32!, _lse, _outputGrad.F32!, _shape, options,
                    _queryGrad.F32!, _keyGrad.F32!, _valueGrad.F32!, _additionalKeyGrad.F32!, _additionalValueGrad.F32!);
            }
            else
            {
                NeighborhoodAttention.Backward(
                    _query.F32!, _key.F32!, _value.F32!, _output.F32!, _lse, _outputGrad.F32!, _shape, options,
                    _queryGrad.F32!, _keyGrad.F32!, _valueGrad.F32!);
            }
        }
    }

    /// <summary>A float32 or float16 buffer.</summary>
    private sealed record Tensor(float[]? F32, Half[]? F16)
    {
        public int Length => F32?.Length ?? F16!.Length;

        public static Tensor Zero(long count, bool isFloat16)
        {
            if (count > Array.MaxLength)
            {
                throw CliException.Usage($"the problem needs a tensor of {count} elements; one array holds at most {Array.MaxLength}.");
            }

            var n = (int)count;
            return isFloat16 ? new Tensor(null, new Half[n]) : new Tensor(new float[n], null);
        }

        public static Tensor Random(Random rng, long count, bool isFloat16)
        {
            var tensor = Zero(count, isFloat16);
            for (var i = 0; i < tensor.Length; i++)
            {
                var x = (rng.NextSingle() * 2) - 1;
                if (isFloat16)
                {
                    tensor.F16![i] = (Half)x;
                }
                else
                {
                    tensor.F32![i] = x;
                }
            }

            return tensor;
        }
    }

    /// <summary>Renders the measurements as a table or as JSON lines.</summary>
    private sealed class Report(ProfileSetup setup, double forwardFlops, double backwardFlops, List<Measurement> results, string machine)
    {
        private static readonly CultureInfo _inv = CultureInfo.InvariantCulture;

        private int Rank => setup.Shape.Rank;

        public void WriteTable(TextWriter stdout)
        {
            var o = setup.Options;
            var s = setup.Shape;
            var work = $"forward {Fmt(forwardFlops / 1e9)} GFLOP" + (setup.Backward ? $", backward {Fmt(backwardFlops / 1e9)} GFLOP" : string.Empty);
            stdout.WriteLine(
                $"natten profile: {Rank}D {s}, kernel {Axes(o.KernelSize, 0)} stride {Axes(o.Stride, 1)} "
              + $"dilation {Axes(o.Dilation, 1)} causal {string.Join('x', ProblemOptions.Resolve(o.Causal, Rank).Select(c => c ? 1 : 0))}, "
              + $"{setup.DType}; useful work: {work}");
            stdout.WriteLine(
                $"machine: {machine}; median of {setup.Repeat} after {setup.Warmup} warm-up"
              + (IsOptimizedBuild ? string.Empty : "; WARNING: unoptimized (Debug) build, use -c Release for real timings"));
            stdout.WriteLine();

            var rows = new List<string[]> { new[] { "backend", "pass", "median ms", "min ms", "useful TFLOP/s", "vs reference", "device MB" } };
            foreach (var m in results.Where(m => m.SkippedReason is null))
            {
                var speedup = Speedup(m);
                rows.Add(
                [
                    m.Backend, m.Pass, m.MedianMs.ToString("F3", _inv), m.MinMs.ToString("F3", _inv), Fmt(Tflops(m)),
                    speedup is { } x ? x.ToString("F2", _inv) + "x" : "n/a",
                    DeviceMemory(m) is { } bytes ? (bytes / 1e6).ToString("F2", _inv) : "host",
                ]);
            }

            var widths = Enumerable.Range(0, rows[0].Length).Select(c => rows.Max(r => r[c].Length)).ToArray();
            foreach (var row in rows)
            {
                // Names left-aligned, numbers right-aligned.
                var cells = row.Select((cell, c) => c < 2 ? cell.PadRight(widths[c]) : cell.PadLeft(widths[c]));
                stdout.WriteLine(string.Join("  ", cells).TrimEnd());
            }

            foreach (var m in results.Where(m => m.SkippedReason is not null))
            {
                stdout.WriteLine($"skipped {m.Backend} {m.Pass}: {m.SkippedReason}");
            }

            stdout.WriteLine();
            foreach (var backend in setup.Backends)
            {
                stdout.WriteLine($"{backend}: {AttentionBackends.Describe(backend)}");
            }
        }

        public void WriteJson(TextWriter stdout)
        {
            foreach (var m in results)
            {
                using var buffer = new MemoryStream();
                using (var json = new Utf8JsonWriter(buffer))
                {
                    WriteMeasurement(json, m);
                }

                stdout.WriteLine(System.Text.Encoding.UTF8.GetString(buffer.ToArray()));
            }
        }

        private void WriteMeasurement(Utf8JsonWriter json, Measurement m)
        {
            var s = setup.Shape;
            var o = setup.Options;
            json.WriteStartObject();
            json.WriteString("backend", m.Backend);
            json.WriteString("pass", m.Pass);
            json.WriteString("dtype", setup.DType);
            json.WriteNumber("rank", Rank);
            json.WriteNumber("batch", s.Batch);
            WriteArray(json, "shape", ProblemOptions.Resolve(s.Spatial, Rank, 1));
            json.WriteNumber("heads", s.Heads);
            json.WriteNumber("kv_heads", s.KvHeads);
            json.WriteNumber("dim", s.HeadDim);
            json.WriteNumber("value_dim", s.ValueDim);
            json.WriteNumber("additional_tokens", s.AdditionalTokens);
            WriteArray(json, "kernel_size", ProblemOptions.Resolve(o.KernelSize, Rank, 0));
            WriteArray(json, "stride", ProblemOptions.Resolve(o.Stride, Rank, 1));
            WriteArray(json, "dilation", ProblemOptions.Resolve(o.Dilation, Rank, 1));
            json.WriteStartArray("causal");
            foreach (var c in ProblemOptions.Resolve(o.Causal, Rank))
            {
                json.WriteBooleanValue(c);
            }

            json.WriteEndArray();
            WriteNumberOrNull(json, "scale", o.Scale);
            json.WriteNumber("useful_gflop", (m.Pass == "backward" ? backwardFlops : forwardFlops) / 1e9);
            json.WriteNumber("warmup", setup.Warmup);
            json.WriteNumber("repeat", setup.Repeat);
            json.WriteNumber("seed", setup.Seed);
            var ran = m.SkippedReason is null;
            WriteNumberOrNull(json, "ms_median", ran ? m.MedianMs : null);
            WriteNumberOrNull(json, "ms_min", ran ? m.MinMs : null);
            WriteNumberOrNull(json, "useful_tflops", ran ? Tflops(m) : null);
            WriteNumberOrNull(json, "speedup_vs_reference", Speedup(m));
            WriteNumberOrNull(json, "device_memory_bytes", DeviceMemory(m));
            if (m.SkippedReason is null)
            {
                json.WriteNull("skipped_reason");
            }
            else
            {
                json.WriteString("skipped_reason", m.SkippedReason);
            }

            json.WriteString("machine", machine);
            json.WriteBoolean("optimized_build", IsOptimizedBuild);
            json.WriteEndObject();
        }

        private double Tflops(Measurement m) => (m.Pass == "backward" ? backwardFlops : forwardFlops) / (m.MedianMs * 1e-3) / 1e12;

        /// <summary>The reference's median over this one's, for the same pass; null when either did not run.</summary>
        /// <summary>Peak device memory of the measured call (tensors plus workspace); null for host backends.</summary>
        private double? DeviceMemory(Measurement m)
            => AttentionBackends.DeviceMemoryBytes(
                m.Backend, setup.Shape, setup.Options, setup.IsFloat16 ? ElementType.Float16 : ElementType.Float32, m.Pass == "backward");

        private double? Speedup(Measurement m)
        {
            var reference = results.Find(r => r.Pass == m.Pass && r.Backend == "reference" && r.SkippedReason is null);
            return reference is null || m.SkippedReason is not null || m.MedianMs <= 0 ? null : reference.MedianMs / m.MedianMs;
        }

        private string Axes(AxisValues values, int unspecified) => string.Join('x', ProblemOptions.Resolve(values, Rank, unspecified));

        /// <summary>Three decimals, or scientific notation for tiny values (the reference reaches ~1e-3 TFLOP/s).</summary>
        private static string Fmt(double x) => x >= 0.01 || x == 0 ? x.ToString("F3", _inv) : x.ToString("0.00e+0", _inv);

        private static void WriteArray(Utf8JsonWriter json, string name, int[] values)
        {
            json.WriteStartArray(name);
            foreach (var v in values)
            {
                json.WriteNumberValue(v);
            }

            json.WriteEndArray();
        }

        private static void WriteNumberOrNull(Utf8JsonWriter json, string name, double? value)
        {
            if (value is { } v && double.IsFinite(v))
            {
                json.WriteNumber(name, v);
            }
            else
            {
                json.WriteNull(name);
            }
        }
    }
}
