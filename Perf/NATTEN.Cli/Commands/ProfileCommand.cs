using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text.Json;

namespace Natten.Cli.Commands;

/// <summary>
/// <c>natten profile</c>: times each backend on one random problem and reports the median time,
/// useful TFLOP/s (<see cref="AttentionFlops"/>), the speedup over the reference and naive backends
/// and over dense attention on the same backend, and for the fused backend the simulator's bound
/// (<see cref="FusedTuning.Simulate"/>). Also lists (<c>--dry-run</c>) and searches
/// (<c>--optimize</c>) fused tile shapes and plots speedup against the window size (<c>--plot</c>).
/// </summary>
internal static class ProfileCommand
{
    private static readonly string[] _dtypes = ["fp32", "fp16", "bf16"];

    public static string UsageText =>
        $"""
        Usage: natten profile [options]

        Times every backend (or some) on a random problem: median of --repeat runs after --warmup runs.
        Reports useful TFLOP/s (only the (query, key) pairs a query may attend to count), the speedup
        over the 'reference' and 'naive' backends, and the speedup over dense attention (the same
        problem with kernel size = the full extent, non-causal) timed on the same backend in the same
        run. For 'fused' it also prints the simulator's upper bound on that speedup (natten simulate).

        Problem:
          --shape X           spatial extents, e.g. 1024, 32x32 or 8x16x16 (default 16x16)
        {ProblemOptions.Usage}
          --scale S           score scale (default 1/sqrt(D))
          --batch B           batch size (default 1)
          --heads H           query heads (default 4)
          --kv-heads H        key/value heads, must divide --heads (default: --heads)
          --dim D             query/key head dimension (default 32)
          --value-dim D       value head dimension (default: --dim)
          --additional-tokens N   extra key/value tokens every query attends to (default 0)
          --dtype T           fp32, fp16 or bf16 (default fp32)
          --tf32              let the fused float32 forward use TF32 tensor cores (opt-in, ~1e-3 relative error)
          --tiles Q/KV        fused tile shapes, e.g. 8x8/4x4 (query tile / KV sub-tile; default per rank and D)

        Measurement:
          --backend NAMES     all (default), or a comma-separated list of: {string.Join(", ", AttentionBackends.Names)}
          --backward          also time the backward pass
          --warmup N          untimed runs first (default 1)
          --repeat N          timed runs; the median is reported (default 3)
          --seed N            random inputs' seed (default 0)
          --no-dense          do not time dense attention (no 'vs dense' column)
          --json              one JSON object per line and measurement instead of a table

        Fused tile shapes:
          --dry-run           list the tile configurations the default accelerator accepts, with the
                              simulator's figures, least simulated work first; nothing is timed
          --optimize          time the fused forward with each configuration (the default tiles, then
                              the least simulated work first), show progress on stderr, print the best
          --max-configs N     configurations --optimize times at most (default 32)

        Plot:
          --plot FILE.png     also time a sweep of kernel sizes and draw each backend's speedup over
                              dense attention (and the fused simulator bound) against the kernel size
          --plot-kernels L    kernel sizes of the sweep, e.g. 3,5,7 (default: 3,5,7,9,11,13 that fit)

        {BlockSparseProfile.Usage}
        """;

    public static int Execute(ArgumentReader args, TextWriter stdout, TextWriter stderr)
    {
        if (args.WantsHelp)
        {
            stdout.WriteLine(UsageText);
            return ExitCodes.Success;
        }

        if (args.GetString("--pattern") is { } pattern)
        {
            return BlockSparseProfile.Execute(args, pattern, stdout);
        }

        var setup = ReadSetup(args);
        args.ThrowIfUnused("profile");

        // Validates the problem (ArgumentException -> exit code 2) before any allocation.
        var forwardFlops = AttentionFlops.Forward(setup.Shape, setup.Options);
        var backwardFlops = AttentionFlops.Backward(setup.Shape, setup.Options);
        CheckTuningOptions(setup);

        if (setup.DryRun)
        {
            return ProfileTuning.DryRun(setup, forwardFlops, stdout);
        }

        using var inputs = new ProfileInputs(setup.Shape, setup.ElementType, setup.Seed);
        if (setup.Optimize)
        {
            return ProfileTuning.Optimize(setup, inputs, forwardFlops, stdout, stderr);
        }

        var results = new List<Measurement>();
        var dense = DenseOptions(setup);
        foreach (var backend in setup.Backends)
        {
            results.Add(MeasureForward(setup, inputs, backend, setup.Options, dense: false));
            if (setup.Dense)
            {
                results.Add(MeasureForward(setup, inputs, backend, dense, dense: true));
            }
        }

        if (setup.Backward)
        {
            var prepared = inputs.TryPrepareBackward(setup.Options, out var why);
            foreach (var backend in setup.Backends)
            {
                if (!prepared)
                {
                    results.Add(Measurement.Skipped(backend, "backward", false, why));
                    continue;
                }

                results.Add(MeasureBackward(setup, inputs, backend, setup.Options, dense: false));
                if (setup.Dense)
                {
                    var densePrepared = inputs.TryPrepareBackward(dense, out var denseWhy);
                    results.Add(densePrepared
                        ? MeasureBackward(setup, inputs, backend, dense, dense: true)
                        : Measurement.Skipped(backend, "backward", true, denseWhy));
                    inputs.TryPrepareBackward(setup.Options, out _);
                }
            }
        }

        var report = new Report(setup, forwardFlops, backwardFlops, results, MachineDescription());
        IReadOnlyList<SpeedupPlot.Point>? plotPoints = null;
        if (setup.PlotPath is not null)
        {
            plotPoints = SpeedupPlot.Measure(setup, inputs, results);
        }

        if (setup.Json)
        {
            report.WriteJson(stdout);
            if (plotPoints is not null)
            {
                SpeedupPlot.WriteJson(setup, plotPoints, stdout);
            }
        }
        else
        {
            report.WriteTable(stdout);
        }

        if (setup.PlotPath is not null)
        {
            SpeedupPlot.Draw(setup, plotPoints!, AcceleratorName());
            if (!setup.Json)
            {
                stdout.WriteLine();
                stdout.WriteLine($"plot: {setup.PlotPath} (speedup over dense attention for kernel sizes {string.Join(',', plotPoints!.Select(p => p.Kernel).Distinct())})");
            }
        }

        return ExitCodes.Success;
    }

    /// <summary>The host the timings come from (the library does not expose an accelerator description yet).</summary>
    internal static string MachineDescription()
        => $"CPU {Environment.ProcessorCount} cores {RuntimeInformation.ProcessArchitecture}, "
         + $"{RuntimeInformation.OSDescription}, {RuntimeInformation.FrameworkDescription}";

    /// <summary>The default accelerator as the ILGPU backends name it, e.g. <c>Cpu: CPUAccelerator</c>.</summary>
    internal static string AcceleratorName()
        => AttentionBackends.Names.Contains(FusedBackendName)
            ? AttentionBackends.Describe(FusedBackendName).Split(" [", 2)[^1].TrimEnd(']').Replace("on ", string.Empty, StringComparison.Ordinal)
            : "host CPU";

    /// <summary>Whether the library was compiled with optimizations (a Debug build's timings mislead).</summary>
    internal static bool IsOptimizedBuild
        => typeof(NeighborhoodAttention).Assembly.GetCustomAttribute<DebuggableAttribute>() is not { IsJITOptimizerDisabled: true };

    /// <summary>Dense attention on the same problem: kernel size = the full extent on every axis, stride 1, dilation 1, non-causal; same scale and tiles.</summary>
    internal static NeighborhoodAttentionOptions DenseOptions(ProfileSetup setup)
        => new(AxisValues.PerAxis(ProblemOptions.Resolve(setup.Shape.Spatial, setup.Shape.Rank, 1)))
        {
            Scale = setup.Options.Scale,
            Tiles = setup.Options.Tiles,
        };

    /// <summary>
    /// Back-to-back calls per timed sample on device-resident tensors: one synchronisation per sample, as the anchor's
    /// CUDA-event loop, so a GPU sample is not dominated by one host round trip per call. On ILGPU's CPU accelerator
    /// (calls of many milliseconds) one call per sample.
    /// </summary>
    internal static int DeviceCallsPerSample => AttentionDevice.Default.Accelerator.AcceleratorType == ILGPU.Runtime.AcceleratorType.CPU ? 1 : 10;

    /// <summary>
    /// Median and minimum per-call milliseconds over <paramref name="repeat"/> samples after <paramref name="warmup"/> calls;
    /// a sample is <paramref name="callsPerSample"/> calls of <paramref name="run"/> followed by <paramref name="synchronize"/>.
    /// </summary>
    internal static Measurement Time(
        string backend, string pass, bool dense, Action run, int warmup, int repeat, int callsPerSample = 1, Action? synchronize = null)
    {
        for (var i = 0; i < warmup; i++)
        {
            run();
        }

        synchronize?.Invoke();
        var ms = new double[repeat];
        for (var i = 0; i < repeat; i++)
        {
            var start = Stopwatch.GetTimestamp();
            for (var c = 0; c < callsPerSample; c++)
            {
                run();
            }

            synchronize?.Invoke();
            ms[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds / callsPerSample;
        }

        Array.Sort(ms);
        var median = repeat % 2 == 1 ? ms[repeat / 2] : (ms[(repeat / 2) - 1] + ms[repeat / 2]) / 2;
        return new Measurement(backend, pass, dense, median, ms[0], null);
    }

    internal static Measurement MeasureForward(ProfileSetup setup, ProfileInputs inputs, string backend, NeighborhoodAttentionOptions options, bool dense)
    {
        if (!AttentionBackends.CanRun(backend, setup.Shape, options, setup.ElementType, backward: false, out var reason))
        {
            return Measurement.Skipped(backend, "forward", dense, reason);
        }

        var run = options with { Backend = backend };
        return ProfileInputs.IsDeviceResident(backend)
            ? Time(backend, "forward", dense, () => inputs.Forward(run, synchronize: false), setup.Warmup, setup.Repeat, DeviceCallsPerSample, inputs.Synchronize)
            : Time(backend, "forward", dense, () => inputs.Forward(run), setup.Warmup, setup.Repeat);
    }

    private static Measurement MeasureBackward(ProfileSetup setup, ProfileInputs inputs, string backend, NeighborhoodAttentionOptions options, bool dense)
    {
        if (!AttentionBackends.CanRun(backend, setup.Shape, options, setup.ElementType, backward: true, out var reason)
            || !inputs.CanRunBackward(backend, out reason))
        {
            return Measurement.Skipped(backend, "backward", dense, reason);
        }

        var run = options with { Backend = backend };
        return ProfileInputs.IsDeviceResident(backend)
            ? Time(backend, "backward", dense, () => inputs.Backward(run, synchronize: false), setup.Warmup, setup.Repeat, DeviceCallsPerSample, inputs.Synchronize)
            : Time(backend, "backward", dense, () => inputs.Backward(run), setup.Warmup, setup.Repeat);
    }

    /// <summary>--tiles, --dry-run, --optimize and --plot against each other, the backends and the device.</summary>
    private static void CheckTuningOptions(ProfileSetup setup)
    {
        var hasFused = setup.Backends.Contains(FusedBackendName);
        if (setup.DryRun || setup.Optimize)
        {
            var flag = setup.DryRun ? "--dry-run" : "--optimize";
            if (!AttentionBackends.Names.Contains(FusedBackendName))
            {
                throw CliException.Usage($"{flag} searches the '{FusedBackendName}' backend's tile shapes, and this build has no such backend.");
            }

            if (setup.ExplicitBackends && !hasFused)
            {
                throw CliException.Usage($"{flag} searches the '{FusedBackendName}' backend's tile shapes; --backend does not include it.");
            }

            if (setup.Options.Tiles is not null)
            {
                throw CliException.Usage($"{flag} searches the tile shapes; leave out --tiles.");
            }

            if (setup.PlotPath is not null || setup.Backward)
            {
                throw CliException.Usage($"{flag} tunes the fused forward pass; leave out {(setup.Backward ? "--backward" : "--plot")}.");
            }
        }

        if (setup.Options.Tiles is { } tiles)
        {
            if (!hasFused)
            {
                throw CliException.Usage($"--tiles sets the '{FusedBackendName}' backend's tile shapes; --backend does not include it.");
            }

            if (!FusedTuning.CanRun(setup.Shape, setup.Options, setup.ElementType, out var reason))
            {
                throw CliException.Usage($"--tiles {tiles.ToArgument()} cannot run here: {reason}.");
            }
        }

        if (setup.PlotKernels is not null && setup.PlotPath is null)
        {
            throw CliException.Usage("--plot-kernels sets the sweep of --plot; give --plot FILE.png too.");
        }

        if (setup.PlotPath is { } path)
        {
            var directory = Path.GetDirectoryName(Path.GetFullPath(path));
            if (directory is not null && !Directory.Exists(directory))
            {
                throw CliException.Usage($"--plot: the folder '{directory}' does not exist.");
            }

            if (!setup.Dense)
            {
                throw CliException.Usage("--plot draws the speedup over dense attention; leave out --no-dense.");
            }

            if (!setup.Backends.Any(b => b != ReferenceBackendName))
            {
                throw CliException.Usage($"--plot needs a backend other than '{ReferenceBackendName}' (its cost does not depend on the window).");
            }

            SpeedupPlot.Kernels(setup);
        }
    }

    internal const string FusedBackendName = "fused";
    internal const string NaiveBackendName = "naive";
    internal const string ReferenceBackendName = "reference";

    private static ProfileSetup ReadSetup(ArgumentReader args)
    {
        var spatial = ProblemOptions.ReadShape(args);
        var options = ProblemOptions.Read(args, defaultKernelSize: 7);
        if (args.GetDouble("--scale") is { } scale)
        {
            options = options with { Scale = scale };
        }

        options = ProblemOptions.ReadTiles(args, options);
        if (args.GetFlag("--tf32"))
        {
            options = options with { AllowTf32 = true };
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
        var backendArg = args.GetString("--backend");
        var backends = backendArg is null || string.Equals(backendArg, "all", StringComparison.OrdinalIgnoreCase)
            ? AttentionBackends.Names
            : backendArg.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                .Select(ProblemOptions.ResolveBackend).Distinct().ToArray();

        var shape = new AttentionShape(batch, spatial, heads, dim)
        {
            KvHeads = kvHeads,
            ValueDim = valueDim,
            AdditionalTokens = additional,
        };
        return new ProfileSetup
        {
            Shape = shape,
            Options = options,
            ElementType = dtype switch { "fp16" => ElementType.Float16, "bf16" => ElementType.BFloat16, _ => ElementType.Float32 },
            Backends = backends,
            ExplicitBackends = backendArg is not null && !string.Equals(backendArg, "all", StringComparison.OrdinalIgnoreCase),
            Backward = args.GetFlag("--backward"),
            Warmup = args.GetInt("--warmup", 1, min: 0),
            Repeat = args.GetInt("--repeat", 3, min: 1),
            Seed = args.GetInt("--seed", 0),
            Json = args.GetFlag("--json"),
            Dense = !args.GetFlag("--no-dense"),
            DryRun = args.GetFlag("--dry-run"),
            Optimize = args.GetFlag("--optimize"),
            MaxConfigs = args.GetInt("--max-configs", 32, min: 1),
            PlotPath = args.GetString("--plot"),
            PlotKernels = args.GetIntList("--plot-kernels", min: 2),
        };
    }

    internal sealed record ProfileSetup
    {
        public required AttentionShape Shape { get; init; }

        public required NeighborhoodAttentionOptions Options { get; init; }

        public required ElementType ElementType { get; init; }

        public required IReadOnlyList<string> Backends { get; init; }

        /// <summary>Whether --backend named the backends (rather than all of them).</summary>
        public required bool ExplicitBackends { get; init; }

        public required bool Backward { get; init; }

        public required int Warmup { get; init; }

        public required int Repeat { get; init; }

        public required int Seed { get; init; }

        public required bool Json { get; init; }

        public required bool Dense { get; init; }

        public required bool DryRun { get; init; }

        public required bool Optimize { get; init; }

        public required int MaxConfigs { get; init; }

        public required string? PlotPath { get; init; }

        public required int[]? PlotKernels { get; init; }

        public string DType => ElementType switch { ElementType.Float16 => "fp16", ElementType.BFloat16 => "bf16", _ => "fp32" };


        public int Rank => Shape.Rank;

        /// <summary>The problem line every output starts with.</summary>
        public string Describe()
            => $"{Rank}D {Shape}, kernel {ProblemOptions.Format(Options.KernelSize, Rank, 0)} stride {ProblemOptions.Format(Options.Stride, Rank, 1)} "
             + $"dilation {ProblemOptions.Format(Options.Dilation, Rank, 1)} causal {ProblemOptions.Format(Options.Causal, Rank)}, {DType}{(Options.AllowTf32 ? " (TF32 allowed)" : string.Empty)}";

        /// <summary>The problem's fields, written first in every JSON line of the command.</summary>
        public void WriteProblem(Utf8JsonWriter json)
        {
            var s = Shape;
            var o = Options;
            json.WriteString("dtype", DType);
            json.WriteBoolean("allow_tf32", Options.AllowTf32);
            json.WriteNumber("rank", Rank);
            json.WriteNumber("batch", s.Batch);
            ProfileJson.WriteArray(json, "shape", ProblemOptions.Resolve(s.Spatial, Rank, 1));
            json.WriteNumber("heads", s.Heads);
            json.WriteNumber("kv_heads", s.KvHeads);
            json.WriteNumber("dim", s.HeadDim);
            json.WriteNumber("value_dim", s.ValueDim);
            json.WriteNumber("additional_tokens", s.AdditionalTokens);
            ProfileJson.WriteArray(json, "kernel_size", ProblemOptions.Resolve(o.KernelSize, Rank, 0));
            ProfileJson.WriteArray(json, "stride", ProblemOptions.Resolve(o.Stride, Rank, 1));
            ProfileJson.WriteArray(json, "dilation", ProblemOptions.Resolve(o.Dilation, Rank, 1));
            json.WriteStartArray("causal");
            foreach (var c in ProblemOptions.Resolve(o.Causal, Rank))
            {
                json.WriteBooleanValue(c);
            }

            json.WriteEndArray();
            ProfileJson.WriteNumberOrNull(json, "scale", o.Scale);
            json.WriteNumber("warmup", Warmup);
            json.WriteNumber("repeat", Repeat);
            json.WriteNumber("seed", Seed);
        }
    }

    /// <summary>One timed (or skipped) backend and pass, on the problem or (<see cref="Dense"/>) on dense attention; <see cref="SkippedReason"/> is set when it could not run.</summary>
    internal sealed record Measurement(string Backend, string Pass, bool Dense, double MedianMs, double MinMs, string? SkippedReason)
    {
        public static Measurement Skipped(string backend, string pass, bool dense, string reason) => new(backend, pass, dense, double.NaN, double.NaN, reason);

        public bool Ran => SkippedReason is null;
    }

    /// <summary>Renders the measurements as a table or as JSON lines.</summary>
    private sealed class Report(ProfileSetup setup, double forwardFlops, double backwardFlops, List<Measurement> results, string machine)
    {
        private static readonly CultureInfo _inv = CultureInfo.InvariantCulture;
        private readonly FusedSimulation? _simulation = setup.Backends.Contains(FusedBackendName) ? FusedTuning.Simulate(setup.Shape, setup.Options, FusedKvTiling.Dynamic, setup.ElementType) : null;

        private int Rank => setup.Shape.Rank;

        private IEnumerable<Measurement> Problems => results.Where(m => !m.Dense);

        public void WriteTable(TextWriter stdout)
        {
            var work = $"forward {Fmt(forwardFlops / 1e9)} GFLOP" + (setup.Backward ? $", backward {Fmt(backwardFlops / 1e9)} GFLOP" : string.Empty);
            stdout.WriteLine($"natten profile: {setup.Describe()}; useful work: {work}");
            stdout.WriteLine(
                $"machine: {machine}; median of {setup.Repeat} after {setup.Warmup} warm-up"
              + (IsOptimizedBuild ? string.Empty : "; WARNING: unoptimized (Debug) build, use -c Release for real timings"));
            stdout.WriteLine(
                $"timing: {string.Join(", ", setup.Backends.Where(ProfileInputs.IsDeviceResident))} on tensors resident on {AcceleratorName()} "
              + $"(uploaded once; {DeviceCallsPerSample} back-to-back call(s) per sample, then one synchronisation); the other backends on host spans");
            if (setup.Dense)
            {
                stdout.WriteLine(
                    $"dense: the same problem with kernel {string.Join('x', ProblemOptions.Resolve(setup.Shape.Spatial, Rank, 1))} (K = n on every axis), "
                  + $"stride 1, dilation 1, non-causal, timed on each backend in this run; FLOP-wise bound 1/(1-sparsity) = {X(FlopBound)}");
            }

            if (_simulation is { } sim)
            {
                stdout.WriteLine(
                    $"fused tiles: {sim.Tiles} ({(setup.Options.Tiles is null ? "default" : "--tiles")}); simulator (dynamic KV tiling): "
                  + $"at most {sim.MaxVisited} of {sim.FullAttentionSubTiles} KV sub-tiles per query tile, upper-bound speedup {X(sim.UpperBoundSpeedup)}"
                  + (sim.PerfectlyBlockSparse ? ", perfectly block-sparse" : string.Empty));
            }

            stdout.WriteLine();
            var rows = new List<string[]>
            {
                new[] { "backend", "pass", "median ms", "min ms", "useful TFLOP/s", "vs reference", "vs naive", "dense ms", "vs dense", "bound", "device MB" },
            };
            foreach (var m in Problems.Where(m => m.Ran))
            {
                var dense = DenseOf(m);
                rows.Add(
                [
                    m.Backend, m.Pass, m.MedianMs.ToString("F3", _inv), m.MinMs.ToString("F3", _inv), Fmt(Tflops(m)),
                    X(Speedup(m, ReferenceBackendName)), X(Speedup(m, NaiveBackendName)),
                    dense is { Ran: true } ? dense.MedianMs.ToString("F3", _inv) : "n/a",
                    X(SpeedupVsDense(m)), X(Bound(m)),
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

            foreach (var m in results.Where(m => !m.Ran))
            {
                stdout.WriteLine($"skipped {m.Backend} {m.Pass}{(m.Dense ? " (dense)" : string.Empty)}: {m.SkippedReason}");
            }

            stdout.WriteLine();
            if (_simulation is not null && results.Any(m => m.Backend == FusedBackendName && m.Ran && !m.Dense && m.Pass == "forward"))
            {
                stdout.WriteLine(
                    "bound: the simulator's upper bound on fused's speedup over dense attention, from the KV sub-tiles each query tile visits "
                  + "(natten simulate). It assumes every visited sub-tile costs the same, as on a GPU; the CPU accelerator skips masked pairs "
                  + "cheaply and can beat it.");
            }

            foreach (var backend in setup.Backends)
            {
                stdout.WriteLine($"{backend}: {AttentionBackends.Describe(backend)}");
            }
        }

        public void WriteJson(TextWriter stdout)
        {
            foreach (var m in Problems)
            {
                stdout.WriteLine(ProfileJson.Line(json => WriteMeasurement(json, m)));
            }
        }

        private void WriteMeasurement(Utf8JsonWriter json, Measurement m)
        {
            json.WriteStartObject();
            json.WriteString("backend", m.Backend);
            json.WriteString("pass", m.Pass);
            json.WriteString("timing", ProfileInputs.IsDeviceResident(m.Backend) ? "device-resident" : "host");
            setup.WriteProblem(json);
            if (m.Backend == FusedBackendName && _simulation is { } tiles)
            {
                json.WriteString("tiles", tiles.Tiles.ToArgument());
            }
            else
            {
                json.WriteNull("tiles");
            }

            json.WriteNumber("useful_gflop", (m.Pass == "backward" ? backwardFlops : forwardFlops) / 1e9);
            ProfileJson.WriteNumberOrNull(json, "ms_median", m.Ran ? m.MedianMs : null);
            ProfileJson.WriteNumberOrNull(json, "ms_min", m.Ran ? m.MinMs : null);
            ProfileJson.WriteNumberOrNull(json, "useful_tflops", m.Ran ? Tflops(m) : null);
            ProfileJson.WriteNumberOrNull(json, "speedup_vs_reference", Speedup(m, ReferenceBackendName));
            ProfileJson.WriteNumberOrNull(json, "speedup_vs_naive", Speedup(m, NaiveBackendName));
            ProfileJson.WriteArray(json, "dense_kernel_size", ProblemOptions.Resolve(setup.Shape.Spatial, Rank, 1));
            var dense = DenseOf(m);
            ProfileJson.WriteNumberOrNull(json, "dense_ms_median", dense is { Ran: true } ? dense.MedianMs : null);
            ProfileJson.WriteNumberOrNull(json, "dense_ms_min", dense is { Ran: true } ? dense.MinMs : null);
            ProfileJson.WriteNumberOrNull(json, "speedup_vs_dense", SpeedupVsDense(m));
            if (dense is { Ran: false })
            {
                json.WriteString("dense_skipped_reason", dense.SkippedReason);
            }
            else
            {
                json.WriteNull("dense_skipped_reason");
            }

            ProfileJson.WriteNumberOrNull(json, "flop_bound", FlopBound);
            ProfileJson.WriteNumberOrNull(json, "simulated_bound", Bound(m));
            if (m.Backend == FusedBackendName && m.Pass == "forward" && _simulation is { } sim)
            {
                json.WriteNumber("simulated_max_visited", sim.MaxVisited);
                json.WriteNumber("simulated_full_sub_tiles", sim.FullAttentionSubTiles);
                json.WriteBoolean("block_sparse", sim.PerfectlyBlockSparse);
            }
            else
            {
                json.WriteNull("simulated_max_visited");
                json.WriteNull("simulated_full_sub_tiles");
                json.WriteNull("block_sparse");
            }

            ProfileJson.WriteNumberOrNull(json, "device_memory_bytes", DeviceMemory(m));
            if (m.Ran)
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

        /// <summary>1 / (1 − sparsity) of the problem (additional tokens count on both sides).</summary>
        private double FlopBound
        {
            get
            {
                var tokens = ProblemOptions.Resolve(setup.Shape.Spatial, Rank, 1).Aggregate(1.0, (n, x) => n * x);
                var densePairs = tokens * (tokens + setup.Shape.AdditionalTokens);
                var perPair = 2.0 * setup.Shape.Batch * setup.Shape.Heads * (setup.Shape.HeadDim + setup.Shape.ValueDim);
                return densePairs * perPair / forwardFlops;
            }
        }

        private double Tflops(Measurement m) => (m.Pass == "backward" ? backwardFlops : forwardFlops) / (m.MedianMs * 1e-3) / 1e12;

        /// <summary>Peak device memory of the measured call (tensors plus workspace); null for host backends.</summary>
        private double? DeviceMemory(Measurement m)
            => AttentionBackends.DeviceMemoryBytes(m.Backend, setup.Shape, setup.Options, setup.ElementType, m.Pass == "backward");

        /// <summary>The baseline backend's median over this one's, for the same pass; null when either did not run.</summary>
        private double? Speedup(Measurement m, string baseline)
        {
            var other = Problems.FirstOrDefault(r => r.Pass == m.Pass && r.Backend == baseline && r.Ran);
            return other is null || !m.Ran || m.MedianMs <= 0 ? null : other.MedianMs / m.MedianMs;
        }

        private Measurement? DenseOf(Measurement m) => results.Find(r => r.Dense && r.Backend == m.Backend && r.Pass == m.Pass);

        private double? SpeedupVsDense(Measurement m)
            => DenseOf(m) is { Ran: true } dense && m.Ran && m.MedianMs > 0 ? dense.MedianMs / m.MedianMs : null;

        /// <summary>The simulator's bound, for the fused forward only.</summary>
        private double? Bound(Measurement m)
            => m.Backend == FusedBackendName && m.Pass == "forward" && _simulation is { } sim ? sim.UpperBoundSpeedup : null;

        private static string X(double? x) => x is { } v && double.IsFinite(v) ? v.ToString("F2", _inv) + "x" : "n/a";

        /// <summary>Three decimals, or scientific notation for tiny values (the reference reaches ~1e-3 TFLOP/s).</summary>
        private static string Fmt(double x) => x >= 0.01 || x == 0 ? x.ToString("F3", _inv) : x.ToString("0.00e+0", _inv);
    }
}

/// <summary>JSON-lines helpers shared by the commands.</summary>
internal static class ProfileJson
{
    /// <summary>One compact JSON object written by <paramref name="write"/>.</summary>
    public static string Line(Action<Utf8JsonWriter> write)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            write(json);
        }

        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());
    }

    public static void WriteArray(Utf8JsonWriter json, string name, IEnumerable<int> values)
    {
        json.WriteStartArray(name);
        foreach (var v in values)
        {
            json.WriteNumberValue(v);
        }

        json.WriteEndArray();
    }

    public static void WriteNumberOrNull(Utf8JsonWriter json, string name, double? value)
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
