using System.Globalization;
using Natten.Diagnostics;
using Natten.Reference;

namespace Natten.Cli.Commands;

/// <summary>
/// <c>natten selftest</c>: the library's backends on this machine's accelerator against the
/// double-precision Reference, on seeded random problems — the check to run first on a GPU machine
/// that has no .NET SDK (the NUnit suite needs one). Prints one line per check and
/// <c>N passed, N failed</c>; exits 1 when a check fails.
/// </summary>
internal static class SelfTestCommand
{
    private static readonly string[] _dtypes = ["fp32", "fp16", "bf16", "tf32"];

    public static string UsageText =>
        $"""
        Usage: natten selftest [options]

        Runs the backends on random problems (ranks 1-3, stride, dilation, causal, GQA, additional
        tokens) and compares every output, LSE and gradient with the double-precision Reference.

          --count N           random problems (default 20)
          --seed N            first seed (default 1)
          --backend NAMES     comma-separated (default: every backend except reference): {string.Join(", ", AttentionBackends.Names)}
          --dtype LIST        comma-separated storage types (default fp32,fp16,bf16,tf32; tf32 = float32 with
                              AllowTf32, forward only)
          --no-backward       forward only
        """;

    public static int Execute(ArgumentReader args, TextWriter stdout)
    {
        if (args.WantsHelp)
        {
            stdout.WriteLine(UsageText);
            return ExitCodes.Success;
        }

        var count = args.GetInt("--count", 20, min: 1);
        var seed = args.GetInt("--seed", 1);
        var backends = (args.GetString("--backend") is { } list
                ? list.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(ProblemOptions.ResolveBackend)
                : AttentionBackends.Names.Where(n => n != "reference"))
            .ToArray();
        var dtypes = (args.GetString("--dtype") ?? "fp32,fp16,bf16,tf32").Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        foreach (var dtype in dtypes)
        {
            if (!_dtypes.Contains(dtype))
            {
                throw CliException.Usage($"--dtype: '{dtype}' is not one of fp32, fp16, bf16, tf32.");
            }
        }

        var backward = !args.GetFlag("--no-backward");
        args.ThrowIfUnused("selftest");

        stdout.WriteLine($"natten selftest: {string.Join(", ", backends.Select(b => $"{b} — {AttentionBackends.Describe(b)}"))}");
        int passed = 0, failed = 0, skipped = 0;

        // The intrinsics first: on a GPU this is the real ldmatrix against the fragment layout, the real cp.async, and the
        // state spaces and alignment those two rely on.
        var device = AttentionDevice.Default;
        foreach (var check in KernelSelfChecks.All(device))
        {
            if (check.Skipped is { } reason)
            {
                skipped++;
                stdout.WriteLine($"skip  {check.What} on {device.Name}: {reason}");
                continue;
            }

            (check.Passed ? ref passed : ref failed)++;
            stdout.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"{(check.Passed ? "ok  " : "FAIL")}  {check.What} on {device.Name}: {check.Wrong} of {check.Compared} {check.Unit} wrong"));
        }

        for (var s = seed; s < seed + count; s++)
        {
            var problem = SelfTestProblem.Create(s);
            foreach (var backend in backends)
            {
                foreach (var dtype in dtypes)
                {
                    foreach (var result in problem.Check(backend, dtype, backward))
                    {
                        if (result.Skipped is { } why)
                        {
                            skipped++;
                            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"skip  seed {s} {backend} {dtype} {result.What}: {why}"));
                            continue;
                        }

                        var ok = result.Error <= result.Tolerance;
                        (ok ? ref passed : ref failed)++;
                        stdout.WriteLine(string.Create(
                            CultureInfo.InvariantCulture,
                            $"{(ok ? "ok  " : "FAIL")}  seed {s} {backend} {dtype} {result.What}: max error {result.Error:e2} (tolerance {result.Tolerance:e1}) {problem}"));
                    }
                }
            }
        }

        stdout.WriteLine($"{passed} passed, {failed} failed, {skipped} skipped");
        return failed == 0 ? ExitCodes.Success : ExitCodes.Io;
    }
}

/// <summary>One random problem of the self-test and its checks.</summary>
internal sealed class SelfTestProblem
{
    private readonly AttentionShape _shape;
    private readonly NeighborhoodAttentionOptions _options;
    private readonly NeighborhoodProblem _reference;
    private readonly float[] _q, _k, _v, _ak, _av, _dO;

    private SelfTestProblem(AttentionShape shape, NeighborhoodAttentionOptions options, NeighborhoodProblem reference, Random rng)
    {
        _shape = shape;
        _options = options;
        _reference = reference;
        var rows = (long)reference.Batch * reference.Tokens;
        var extra = (long)reference.Batch * reference.AdditionalTokens;
        _q = Random(rng, rows * reference.Heads * reference.HeadDim);
        _k = Random(rng, rows * reference.KvHeads * reference.HeadDim);
        _v = Random(rng, rows * reference.KvHeads * reference.ValueDim);
        _ak = Random(rng, extra * reference.KvHeads * reference.HeadDim);
        _av = Random(rng, extra * reference.KvHeads * reference.ValueDim);
        _dO = Random(rng, rows * reference.Heads * reference.ValueDim);
    }

    /// <summary>A random valid problem: ranks 1–3 up to ~512 tokens, head dims that exercise the tensor-core paths.</summary>
    public static SelfTestProblem Create(int seed)
    {
        var rng = new Random(seed);
        var rank = rng.Next(1, 4);
        var maxPerAxis = rank switch { 1 => 512, 2 => 22, _ => 8 };
        var spatial = new int[rank];
        var kernel = new int[rank];
        var stride = new int[rank];
        var dilation = new int[rank];
        var causal = new bool[rank];
        for (var a = 0; a < rank; a++)
        {
            spatial[a] = rng.Next(2, maxPerAxis + 1);
            dilation[a] = rng.Next(4) == 0 ? rng.Next(1, (spatial[a] / 2) + 1) : 1;
            kernel[a] = rng.Next(2, (spatial[a] / dilation[a]) + 1);
            stride[a] = rng.Next(3) == 0 ? rng.Next(1, kernel[a] + 1) : 1;
            causal[a] = rng.Next(3) == 0;
        }

        int[] dims = [16, 32, 64];
        var kvHeads = rng.Next(1, 3);
        var heads = kvHeads * rng.Next(1, 3);
        var headDim = dims[rng.Next(dims.Length)];
        var valueDim = rng.Next(2) == 0 ? headDim : dims[rng.Next(dims.Length)];
        if (seed % 3 == 0)
        {
            // Every third seed: D = Dv = 64 or 128, the head dims of the generated register-resident tensor-core forward.
            headDim = valueDim = seed % 2 == 0 ? 64 : 128;
        }

        var additional = rng.Next(4) == 0 ? rng.Next(1, 5) : 0;
        var shape = new AttentionShape(rng.Next(1, 3), AxisValues.PerAxis(spatial), heads, headDim)
        {
            KvHeads = kvHeads,
            ValueDim = valueDim,
            AdditionalTokens = additional,
        };
        var options = new NeighborhoodAttentionOptions(AxisValues.PerAxis(kernel))
        {
            Stride = AxisValues.PerAxis(stride),
            Dilation = AxisValues.PerAxis(dilation),
            Causal = rank switch
            {
                1 => new AxisFlags(causal[0]),
                2 => new AxisFlags(causal[0], causal[1]),
                _ => new AxisFlags(causal[0], causal[1], causal[2]),
            },
        };
        var reference = new NeighborhoodProblem
        {
            Batch = shape.Batch, Spatial = spatial, Heads = heads, KvHeads = kvHeads, HeadDim = headDim, ValueDim = valueDim,
            KernelSize = kernel, Stride = stride, Dilation = dilation, Causal = causal, AdditionalTokens = additional,
        };
        return new SelfTestProblem(shape, options, reference, rng);
    }

    public override string ToString() => string.Create(
        CultureInfo.InvariantCulture,
        $"[{_shape} K={_options.KernelSize} s={_options.Stride} d={_options.Dilation} causal={_options.Causal}]");

    /// <summary>Forward output and LSE (and, unless bf16, the gradients) of one backend and storage type.</summary>
    public IEnumerable<SelfTestResult> Check(string backend, string dtype, bool backward)
    {
        var elementType = dtype switch { "fp16" => ElementType.Float16, "bf16" => ElementType.BFloat16, _ => ElementType.Float32 };
        var options = _options with { Backend = backend, AllowTf32 = dtype == "tf32" };
        if (!AttentionBackends.CanRun(backend, _shape, options, elementType, backward: false, out var reason))
        {
            yield return SelfTestResult.Skip("forward", reason);
            yield break;
        }

        Func<float, float> round = dtype switch
        {
            "fp16" => x => (float)(Half)x,
            "bf16" => x => BFloat16Conversions.ToSingle(BFloat16Conversions.FromSingle(x)),
            _ => x => x,
        };
        var (q, k, v, ak, av, dO) = (Map(_q, round), Map(_k, round), Map(_v, round), Map(_ak, round), Map(_av, round), Map(_dO, round));
        var output = new float[_dO.Length];
        var lse = new float[_dO.Length / _reference.ValueDim];
        switch (dtype)
        {
            case "fp16":
                var output16 = new Half[output.Length];
                NeighborhoodAttention.Forward(Half16(q), Half16(k), Half16(v), Half16(ak), Half16(av), _shape, options, output16, lse);
                output = [.. output16.Select(h => (float)h)];
                break;
            case "bf16":
                var outputBits = new ushort[output.Length];
                NeighborhoodAttention.ForwardBFloat16(Bits(q), Bits(k), Bits(v), Bits(ak), Bits(av), _shape, options, outputBits, lse);
                output = [.. outputBits.Select(BFloat16Conversions.ToSingle)];
                break;
            default:
                NeighborhoodAttention.Forward(q, k, v, ak, av, _shape, options, output, lse);
                break;
        }

        var expected = ReferenceAttention.Neighborhood(_reference, Wide(q), Wide(k), Wide(v), Optional(ak), Optional(av));
        // tf32: Q, K, V and P keep 10 mantissa bits (relative rounding ≤ 2^-11 each) on the fused backend; other backends run float32.
        var outputTolerance = dtype switch { "fp16" => 3e-3, "bf16" => 2e-2, "tf32" => 1e-3, _ => 2e-5 };
        yield return new SelfTestResult("output", MaxError(expected.Output, output), outputTolerance, null);
        yield return new SelfTestResult("lse", MaxError(expected.LogSumExp, lse), dtype switch { "fp32" => 2e-5, _ => 1e-3 }, null);

        if (!backward || dtype is "bf16" or "tf32")
        {
            yield break;
        }

        if (!AttentionBackends.CanRun(backend, _shape, options, elementType, backward: true, out reason))
        {
            yield return SelfTestResult.Skip("backward", reason);
            yield break;
        }

        var grads = ReferenceAttention.NeighborhoodBackward(_reference, Wide(q), Wide(k), Wide(v), Wide(dO), Optional(ak), Optional(av));
        var (dq, dk, dv, dak, dav) = (new float[q.Length], new float[k.Length], new float[v.Length], new float[ak.Length], new float[av.Length]);
        if (dtype == "fp16")
        {
            var (hq, hk, hv) = (new Half[q.Length], new Half[k.Length], new Half[v.Length]);
            if (_reference.AdditionalTokens > 0)
            {
                yield return SelfTestResult.Skip("backward", "the float16 backward entry point takes no additional tokens");
                yield break;
            }

            NeighborhoodAttention.Backward(Half16(q), Half16(k), Half16(v), Half16(output), lse, Half16(dO), _shape, options, hq, hk, hv);
            (dq, dk, dv) = ([.. hq.Select(h => (float)h)], [.. hk.Select(h => (float)h)], [.. hv.Select(h => (float)h)]);
        }
        else
        {
            NeighborhoodAttention.Backward(q, k, v, ak, av, output, lse, dO, _shape, options, dq, dk, dv, dak, dav);
        }

        var gradTolerance = dtype == "fp16" ? 5e-3 : 1e-4;
        yield return new SelfTestResult("dQ", MaxError(grads.Query, dq), gradTolerance, null);
        yield return new SelfTestResult("dK", MaxError(grads.Key, dk), gradTolerance, null);
        yield return new SelfTestResult("dV", MaxError(grads.Value, dv), gradTolerance, null);
        if (_reference.AdditionalTokens > 0 && dtype == "fp32")
        {
            yield return new SelfTestResult("d(additional K)", MaxError(grads.AdditionalKey, dak), gradTolerance, null);
            yield return new SelfTestResult("d(additional V)", MaxError(grads.AdditionalValue, dav), gradTolerance, null);
        }
    }

    private static float[] Random(Random rng, long length)
    {
        var data = new float[length];
        for (var i = 0; i < data.Length; i++)
        {
            data[i] = (float)((rng.NextDouble() * 2) - 1);
        }

        return data;
    }

    private static float[] Map(float[] data, Func<float, float> f) => [.. data.Select(f)];

    private static Half[] Half16(float[] data) => [.. data.Select(x => (Half)x)];

    private static ushort[] Bits(float[] data) => [.. data.Select(BFloat16Conversions.FromSingle)];

    private static double[] Wide(float[] data) => [.. data.Select(x => (double)x)];

    private static double[]? Optional(float[] data) => data.Length == 0 ? null : Wide(data);

    /// <summary>Max |expected − actual|; NaN counts as infinite.</summary>
    private static double MaxError(double[] expected, float[] actual)
    {
        var max = 0.0;
        for (var i = 0; i < expected.Length; i++)
        {
            var error = Math.Abs(expected[i] - actual[i]);
            max = double.IsNaN(error) ? double.PositiveInfinity : Math.Max(max, error);
        }

        return max;
    }
}

/// <summary>One comparison of the self-test.</summary>
internal sealed record SelfTestResult(string What, double Error, double Tolerance, string? Skipped)
{
    public static SelfTestResult Skip(string what, string reason) => new(what, 0, 0, reason);
}
