using System.Globalization;
using static Natten.Cli.Commands.ProfileCommand;

namespace Natten.Cli.Commands;

/// <summary>
/// <c>natten profile --plot FILE.png</c>: times each backend (except the reference, whose cost does
/// not depend on the window) over a sweep of kernel sizes and draws its speedup over dense attention
/// on the same backend against the kernel size, with the fused simulator's bound, using ScottPlot.
/// </summary>
internal static class SpeedupPlot
{
    private static readonly int[] _defaultKernels = [3, 5, 7, 9, 11, 13];

    /// <summary>One point: a backend's time at kernel size <see cref="Kernel"/> (every axis) and dense attention's time on the same backend.</summary>
    public sealed record Point(string Backend, int Kernel, Measurement Time, Measurement? Dense, double? SimulatedBound)
    {
        public double? Speedup => Time.Ran && Dense is { Ran: true } d ? d.MedianMs / Time.MedianMs : null;
    }

    /// <summary>Times the sweep; dense attention comes from the main run's measurements.</summary>
    public static IReadOnlyList<Point> Measure(ProfileSetup setup, ProfileInputs inputs, IReadOnlyList<Measurement> mainRun)
    {
        var kernels = Kernels(setup);
        var points = new List<Point>();
        foreach (var backend in setup.Backends.Where(b => b != ReferenceBackendName))
        {
            var dense = mainRun.FirstOrDefault(m => m.Dense && m.Backend == backend && m.Pass == "forward");
            foreach (var k in kernels)
            {
                var options = setup.Options with { KernelSize = k };
                var time = MeasureForward(setup, inputs, backend, options, dense: false);
                double? bound = backend == FusedBackendName ? FusedTuning.Simulate(setup.Shape, options, FusedKvTiling.Dynamic, setup.ElementType).UpperBoundSpeedup : null;
                points.Add(new Point(backend, k, time, dense, bound));
            }
        }

        return points;
    }

    public static void WriteJson(ProfileSetup setup, IReadOnlyList<Point> points, TextWriter stdout)
    {
        foreach (var p in points)
        {
            stdout.WriteLine(ProfileJson.Line(json =>
            {
                json.WriteStartObject();
                json.WriteBoolean("plot_point", true);
                json.WriteString("backend", p.Backend);
                json.WriteString("pass", "forward");
                setup.WriteProblem(json);
                json.WriteNumber("plot_kernel_size", p.Kernel);
                ProfileJson.WriteNumberOrNull(json, "ms_median", p.Time.Ran ? p.Time.MedianMs : null);
                ProfileJson.WriteNumberOrNull(json, "dense_ms_median", p.Dense is { Ran: true } d ? d.MedianMs : null);
                ProfileJson.WriteNumberOrNull(json, "speedup_vs_dense", p.Speedup);
                ProfileJson.WriteNumberOrNull(json, "simulated_bound", p.SimulatedBound);
                json.WriteString("plot", setup.PlotPath);
                json.WriteEndObject();
            }));
        }
    }

    /// <summary>Draws the PNG: one line per backend, the fused bound dashed, 1× dotted.</summary>
    public static void Draw(ProfileSetup setup, IReadOnlyList<Point> points, string device)
    {
        var plot = new ScottPlot.Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var series = 0;
        foreach (var group in points.GroupBy(p => p.Backend))
        {
            var color = palette.GetColor(series++);
            var measured = group.Where(p => p.Speedup is not null).ToArray();
            if (measured.Length > 0)
            {
                var line = plot.Add.Scatter(measured.Select(p => (double)p.Kernel).ToArray(), measured.Select(p => p.Speedup!.Value).ToArray());
                line.LegendText = $"{group.Key} (measured)";
                line.Color = color;
                line.MarkerSize = 8;
                line.LineWidth = 2;
            }

            var bounds = group.Where(p => p.SimulatedBound is not null).ToArray();
            if (bounds.Length > 0)
            {
                var bound = plot.Add.Scatter(bounds.Select(p => (double)p.Kernel).ToArray(), bounds.Select(p => p.SimulatedBound!.Value).ToArray());
                bound.LegendText = $"{group.Key} (simulator bound)";
                bound.Color = color;
                bound.LinePattern = ScottPlot.LinePattern.Dashed;
                bound.MarkerSize = 5;
            }
        }

        var kernels = points.Select(p => p.Kernel).Distinct().Order().ToArray();
        plot.Axes.Bottom.SetTicks([.. kernels.Select(k => (double)k)], [.. kernels.Select(k => k.ToString(CultureInfo.InvariantCulture))]);

        var one = plot.Add.HorizontalLine(1);
        one.LinePattern = ScottPlot.LinePattern.Dotted;
        one.Color = ScottPlot.Colors.Gray;
        var s = setup.Shape;
        plot.Title($"Speedup over dense attention (same backend): {setup.Rank}D {string.Join('x', ProblemOptions.Resolve(s.Spatial, setup.Rank, 1))}, "
                 + $"B{s.Batch} H{s.Heads} D{s.HeadDim} {setup.DType}, {device}", size: 15);
        plot.XLabel($"kernel size K per axis (window of K^{setup.Rank} keys)");
        plot.YLabel("speedup over dense attention (x)");
        plot.ShowLegend(ScottPlot.Alignment.UpperRight);
        plot.SavePng(setup.PlotPath!, 960, 600);
    }

    /// <summary>The sweep's kernel sizes: --plot-kernels, or the defaults that fit every axis (K·d ≤ n, K ≥ stride).</summary>
    internal static int[] Kernels(ProfileSetup setup)
    {
        var rank = setup.Rank;
        var spatial = ProblemOptions.Resolve(setup.Shape.Spatial, rank, 1);
        var dilation = ProblemOptions.Resolve(setup.Options.Dilation, rank, 1);
        var stride = ProblemOptions.Resolve(setup.Options.Stride, rank, 1);
        bool Fits(int k) => Enumerable.Range(0, rank).All(a => (long)k * dilation[a] <= spatial[a] && stride[a] <= k);
        if (setup.PlotKernels is { } given)
        {
            var bad = given.FirstOrDefault(k => !Fits(k));
            return bad == 0
                ? given
                : throw CliException.Usage(
                    $"--plot-kernels: kernel size {bad} does not fit the problem (K x dilation must not exceed the axis length, and the stride must not exceed K).");
        }

        var kernels = _defaultKernels.Where(Fits).ToArray();
        return kernels.Length > 0
            ? kernels
            : throw CliException.Usage($"--plot: none of the default kernel sizes {string.Join(',', _defaultKernels.Select(k => k.ToString(CultureInfo.InvariantCulture)))} fits the problem; give --plot-kernels.");
    }
}
