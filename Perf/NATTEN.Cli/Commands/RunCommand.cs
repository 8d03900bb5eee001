namespace Natten.Cli.Commands;

/// <summary>
/// <c>natten run</c>: neighborhood attention on .npy files. Shapes come from the files (NATTEN layout);
/// float16 inputs use the library's Half entry points, anything else runs in float32.
/// </summary>
internal static class RunCommand
{
    public static string UsageText =>
        $"""
        Usage: natten run --query Q.npy --key K.npy --value V.npy --output O.npy --kernel-size K [options]

        Runs neighborhood attention on NumPy arrays in NATTEN's heads-last layout:
          Q [B, X1(, X2(, X3)), H, D], K [B, X.., Hkv, D], V [B, X.., Hkv, Dv]  (rank = ndim - 3).
        Inputs are float32 ('<f4') or float16 ('<f2'); when every input is float16 the float16
        path runs, otherwise everything is converted to float32 (--dtype overrides). Outputs are
        always float32.

        Files:
          --query FILE        Q, [B, X.., H, D]
          --key FILE          K, [B, X.., Hkv, D]   (H must be a multiple of Hkv)
          --value FILE        V, [B, X.., Hkv, Dv]
          --output FILE       writes O, [B, X.., H, Dv]
          --lse FILE          also writes the log-sum-exp (natural log), [B, X.., H]
          --additional-key FILE    extra keys every query attends to, [B, Nadd, Hkv, D]
          --additional-value FILE  their values, [B, Nadd, Hkv, Dv] (give both or neither)

        Backward (--backward; runs in float32):
          --grad-output FILE  dO, [B, X.., H, Dv]
          --grad-query FILE   writes dQ, [B, X.., H, D]
          --grad-key FILE     writes dK, [B, X.., Hkv, D]
          --grad-value FILE   writes dV, [B, X.., Hkv, Dv]
          --grad-additional-key FILE    writes d(additional K) (with --additional-key)
          --grad-additional-value FILE  writes d(additional V) (with --additional-value)

        Neighborhood:
        {ProblemOptions.Usage}
          --scale S           score scale (default 1/sqrt(D))
          --backend NAME      backend to use (default: the fastest that can run); one of: {string.Join(", ", AttentionBackends.Names)}
          --dtype T           storage: auto (default: float16 when every input is, else float32), fp32, fp16 or
                              bf16 (inputs are rounded to that type first)
          --tf32              let the fused float32 forward use TF32 tensor cores (10-bit mantissa products,
                              float32 accumulation; off by default)

        {BlockSparseRun.Usage}

        Exit codes: 0 success, 1 unreadable or invalid file, 2 bad arguments or invalid problem.
        """;

    public static int Execute(ArgumentReader args, TextWriter stdout)
    {
        if (args.WantsHelp)
        {
            stdout.WriteLine(UsageText);
            return ExitCodes.Success;
        }

        var blockMaskPath = args.GetString("--block-mask");
        var pattern = args.GetString("--pattern");
        if (blockMaskPath is not null || pattern is not null)
        {
            return BlockSparseRun.Execute(args, blockMaskPath, pattern);
        }

        // The whole command line first, so a typo fails before any file is touched.
        var queryPath = args.RequireString("--query");
        var keyPath = args.RequireString("--key");
        var valuePath = args.RequireString("--value");
        var outputPath = args.RequireString("--output");
        var lsePath = args.GetString("--lse");
        var additionalKeyPath = args.GetString("--additional-key");
        var additionalValuePath = args.GetString("--additional-value");
        var backward = args.GetFlag("--backward");
        var gradOutputPath = backward ? args.RequireString("--grad-output") : null;
        var gradQueryPath = backward ? args.RequireString("--grad-query") : null;
        var gradKeyPath = backward ? args.RequireString("--grad-key") : null;
        var gradValuePath = backward ? args.RequireString("--grad-value") : null;
        var gradAdditionalKeyPath = backward ? args.GetString("--grad-additional-key") : null;
        var gradAdditionalValuePath = backward ? args.GetString("--grad-additional-value") : null;
        var options = ProblemOptions.Read(args, defaultKernelSize: null);
        if (args.GetDouble("--scale") is { } scale)
        {
            options = options with { Scale = scale };
        }

        if (args.GetString("--backend") is { } backend)
        {
            options = options with { Backend = ProblemOptions.ResolveBackend(backend) };
        }

        if (args.GetFlag("--tf32"))
        {
            options = options with { AllowTf32 = true };
        }

        var dtype = args.GetChoice("--dtype", ["auto", "fp32", "fp16", "bf16"], "auto");
        args.ThrowIfUnused("run");
        if (backward && dtype is "fp16" or "bf16")
        {
            throw CliException.Usage("--backward runs in float32; use --dtype auto or fp32 with it.");
        }
        if ((additionalKeyPath is null) != (additionalValuePath is null))
        {
            throw CliException.Usage("--additional-key and --additional-value must be given together.");
        }

        if ((gradAdditionalKeyPath is not null || gradAdditionalValuePath is not null) && additionalKeyPath is null)
        {
            throw CliException.Usage("--grad-additional-key and --grad-additional-value need --additional-key and --additional-value.");
        }

        // Fail before the (possibly long) computation when an output cannot be created.
        foreach (var (option, path) in new[]
        {
            ("--output", outputPath), ("--lse", lsePath), ("--grad-query", gradQueryPath), ("--grad-key", gradKeyPath),
            ("--grad-value", gradValuePath), ("--grad-additional-key", gradAdditionalKeyPath), ("--grad-additional-value", gradAdditionalValuePath),
        })
        {
            if (path is not null)
            {
                CheckOutputDirectory(option, path);
            }
        }

        var query = ReadInput("--query", queryPath);
        var key = ReadInput("--key", keyPath);
        var value = ReadInput("--value", valuePath);
        var additionalKey = additionalKeyPath is null ? null : ReadInput("--additional-key", additionalKeyPath);
        var additionalValue = additionalValuePath is null ? null : ReadInput("--additional-value", additionalValuePath);

        var shape = InferShape(query, key, value, additionalKey, additionalValue);
        var spatial = query.Shape[1..^2];
        int[] outputShape = [shape.Batch, .. spatial, shape.Heads, shape.ValueDim];
        int[] lseShape = [shape.Batch, .. spatial, shape.Heads];
        var lse = lsePath is null && !backward ? [] : new float[NpyArray.ElementCount(lseShape)];
        float[] output;

        NpyArray?[] inputs = [query, key, value, additionalKey, additionalValue];
        if (dtype == "bf16")
        {
            static ushort[] Bits(NpyArray? array) => array is null ? [] : [.. array.ToFloat32().Select(BFloat16Conversions.FromSingle)];
            var outputBits = new ushort[NpyArray.ElementCount(outputShape)];
            NeighborhoodAttention.ForwardBFloat16(
                Bits(query), Bits(key), Bits(value), Bits(additionalKey), Bits(additionalValue), shape, options, outputBits, lse);
            output = [.. outputBits.Select(BFloat16Conversions.ToSingle)];
        }
        else if (dtype == "fp16" || (dtype == "auto" && !backward && inputs.All(a => a is null || a.IsFloat16)))
        {
            var output16 = new Half[NpyArray.ElementCount(outputShape)];
            if (additionalKey is null || additionalValue is null)
            {
                NeighborhoodAttention.Forward(query.ToFloat16(), key.ToFloat16(), value.ToFloat16(), shape, options, output16, lse);
            }
            else
            {
                NeighborhoodAttention.Forward(
                    query.ToFloat16(), key.ToFloat16(), value.ToFloat16(), additionalKey.ToFloat16(), additionalValue.ToFloat16(),
                    shape, options, output16, lse);
            }

            output = [.. output16.Select(h => (float)h)];
        }
        else
        {
            output = new float[NpyArray.ElementCount(outputShape)];
            if (additionalKey is null || additionalValue is null)
            {
                NeighborhoodAttention.Forward(query.ToFloat32(), key.ToFloat32(), value.ToFloat32(), shape, options, output, lse);
            }
            else
            {
                NeighborhoodAttention.Forward(
                    query.ToFloat32(), key.ToFloat32(), value.ToFloat32(), additionalKey.ToFloat32(), additionalValue.ToFloat32(),
                    shape, options, output, lse);
            }
        }

        WriteOutput("--output", outputPath, outputShape, output);
        if (lsePath is not null)
        {
            WriteOutput("--lse", lsePath, lseShape, lse);
        }

        if (backward)
        {
            var gradOutput = ReadInput("--grad-output", gradOutputPath!);
            if (!gradOutput.Shape.SequenceEqual(outputShape))
            {
                throw CliException.Usage($"--grad-output has shape {gradOutput.ShapeText}; expected the output's shape ({string.Join(", ", outputShape)}).");
            }

            var dq = new float[query.Length];
            var dk = new float[key.Length];
            var dv = new float[value.Length];
            var dak = new float[additionalKey?.Length ?? 0];
            var dav = new float[additionalValue?.Length ?? 0];
            NeighborhoodAttention.Backward(
                query.ToFloat32(), key.ToFloat32(), value.ToFloat32(), additionalKey?.ToFloat32() ?? [], additionalValue?.ToFloat32() ?? [],
                output, lse, gradOutput.ToFloat32(), shape, options, dq, dk, dv, dak, dav);
            WriteOutput("--grad-query", gradQueryPath!, query.Shape, dq);
            WriteOutput("--grad-key", gradKeyPath!, key.Shape, dk);
            WriteOutput("--grad-value", gradValuePath!, value.Shape, dv);
            if (gradAdditionalKeyPath is not null)
            {
                WriteOutput("--grad-additional-key", gradAdditionalKeyPath, additionalKey!.Shape, dak);
            }

            if (gradAdditionalValuePath is not null)
            {
                WriteOutput("--grad-additional-value", gradAdditionalValuePath, additionalValue!.Shape, dav);
            }
        }

        return ExitCodes.Success;
    }

    /// <summary>
    /// The problem's sizes from the arrays' shapes, after checking that they describe one problem.
    /// The library re-checks the element counts; this names the file that disagrees.
    /// </summary>
    internal static AttentionShape InferShape(
        NpyArray query, NpyArray key, NpyArray value, NpyArray? additionalKey, NpyArray? additionalValue)
    {
        var q = query.Shape;
        if (q.Length is < 4 or > 6)
        {
            throw CliException.Usage(
                $"--query has shape {query.ShapeText}; expected [B, X1(, X2(, X3)), H, D] (4 to 6 dimensions for rank 1 to 3).");
        }

        CheckNonEmpty("--query", query);
        var spatial = q[1..^2];
        var heads = q[^2];
        var headDim = q[^1];

        void CheckKv(string option, NpyArray array, string last)
        {
            var s = array.Shape;
            var expected = $"[{q[0]}, {string.Join(", ", spatial)}, Hkv, {last}]";
            if (s.Length != q.Length)
            {
                throw CliException.Usage(
                    $"{option} has shape {array.ShapeText} ({s.Length} dimensions) but --query has {query.ShapeText} ({q.Length}); expected {expected}.");
            }

            if (s[0] != q[0] || !s[1..^2].SequenceEqual(spatial))
            {
                throw CliException.Usage(
                    $"{option} has shape {array.ShapeText} but --query has {query.ShapeText}; batch and spatial extents must match ({expected}).");
            }

            CheckNonEmpty(option, array);
        }

        CheckKv("--key", key, $"D={headDim}");
        CheckKv("--value", value, "Dv");
        if (key.Shape[^1] != headDim)
        {
            throw CliException.Usage(
                $"--key has head dimension {key.Shape[^1]} (shape {key.ShapeText}) but --query has {headDim} (shape {query.ShapeText}); they must match.");
        }

        var kvHeads = key.Shape[^2];
        if (value.Shape[^2] != kvHeads)
        {
            throw CliException.Usage(
                $"--value has {value.Shape[^2]} heads (shape {value.ShapeText}) but --key has {kvHeads} (shape {key.ShapeText}); they must match.");
        }

        if (heads % kvHeads != 0)
        {
            throw CliException.Usage(
                $"--query has {heads} heads but --key has {kvHeads}; the query heads must be a multiple of the key/value heads (GQA/MQA).");
        }

        var valueDim = value.Shape[^1];
        var additionalTokens = 0;
        if (additionalKey is not null && additionalValue is not null)
        {
            var ak = additionalKey.Shape;
            var av = additionalValue.Shape;
            if (ak.Length != 4 || ak[0] != q[0] || ak[2] != kvHeads || ak[3] != headDim)
            {
                throw CliException.Usage(
                    $"--additional-key has shape {additionalKey.ShapeText}; expected [B={q[0]}, Nadd, Hkv={kvHeads}, D={headDim}].");
            }

            if (av.Length != 4 || av[0] != q[0] || av[1] != ak[1] || av[2] != kvHeads || av[3] != valueDim)
            {
                throw CliException.Usage(
                    $"--additional-value has shape {additionalValue.ShapeText}; expected [B={q[0]}, Nadd={ak[1]}, Hkv={kvHeads}, Dv={valueDim}].");
            }

            additionalTokens = ak[1];
            if (additionalTokens == 0)
            {
                throw CliException.Usage($"--additional-key has shape {additionalKey.ShapeText}: no additional tokens.");
            }
        }

        return new AttentionShape(q[0], AxisValues.PerAxis(spatial), heads, headDim)
        {
            KvHeads = kvHeads,
            ValueDim = valueDim,
            AdditionalTokens = additionalTokens,
        };
    }

    private static void CheckNonEmpty(string option, NpyArray array)
    {
        if (array.Shape.Contains(0))
        {
            throw CliException.Usage($"{option} has shape {array.ShapeText}; every dimension must be at least 1.");
        }
    }

    internal static void CheckOutputDirectory(string option, string path)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null && !Directory.Exists(directory))
        {
            throw CliException.Io($"{option} '{path}': directory '{directory}' does not exist.");
        }
    }

    internal static NpyArray ReadInput(string option, string path)
    {
        try
        {
            return Npy.Read(path);
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or UnauthorizedAccessException)
        {
            throw CliException.Io($"{option} '{path}': {ex.Message}", ex);
        }
    }

    internal static void WriteOutput(string option, string path, int[] shape, float[] data)
    {
        try
        {
            Npy.Write(path, shape, data);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw CliException.Io($"{option} '{path}': cannot write: {ex.Message}", ex);
        }
    }
}
