using System.Globalization;

namespace Natten.Cli.Commands;

/// <summary>
/// <c>natten run --block-mask FILE | --pattern P</c>: block-sparse attention on .npy files. Q is
/// <c>[B, X.., H, D]</c>, K/V <c>[B, Y.., Hkv, D|Dv]</c>; the token grids are flattened row-major
/// (Nq = ∏X, Nk = ∏Y). The mask comes from a dense boolean file or from a named pattern.
/// </summary>
internal static class BlockSparseRun
{
    public const string Usage =
        """
        Block-sparse attention (instead of --kernel-size): Q [B, X.., H, D], K/V [B, Y.., Hkv, D|Dv],
        tokens flattened row-major (Nq = product of X, Nk = product of Y). Give one of:
          --block-mask FILE   dense mask [Nq, Nk] or [H, Nq, Nk] (bool, uint8 or float32 0/1; 1 = attend)
          --pattern P         sliding:L,R    FlashAttention window_size (-1 = no limit on that side)
                              causal         causal attention (bottom-right aligned when Nq != Nk)
                              halo:b,h       HaloNet blocks b per axis with halo h on Q's 1-3D grid
                              segments:FILE  segment ids [N], [B, N] or Q's grid (int/bool/float32; < 0 = padding)
                              documents:0,5,12  packed documents from cumulative lengths (cu_seqlens)
                              strided:LOCAL,STRIDE[,DENSE]  S2-Attention heads (causal; blocks of --block-size)
                              padding:L[,L2..]  key padding: batch entry b sees keys 0 .. L_b - 1 (one L for all, or one per entry)
          --block-size B      query and key block size, e.g. 64 or 64x128 (Bq x Bk); default 64
          --dtype T           storage: auto (float16 when every input is, else float32), fp32, fp16 or bf16
          --export-mask FILE  also write the pattern's dense allowed-pair mask as bool .npy: [H', Nq, Nk], or
                              [B, H', Nq, Nk] for per-batch patterns (H' = H for per-head patterns, else 1)
        --scale, --lse, --backend (fused, naive, reference) and --backward with its
        --grad-* files work as above.
        """;

    public static int Execute(ArgumentReader args, string? maskPath, string? pattern)
    {
        if (maskPath is not null && pattern is not null)
        {
            throw CliException.Usage("give either --block-mask or --pattern, not both.");
        }

        var queryPath = args.RequireString("--query");
        var keyPath = args.RequireString("--key");
        var valuePath = args.RequireString("--value");
        var outputPath = args.RequireString("--output");
        var lsePath = args.GetString("--lse");
        var backward = args.GetFlag("--backward");
        var gradOutputPath = backward ? args.RequireString("--grad-output") : null;
        var gradQueryPath = backward ? args.RequireString("--grad-query") : null;
        var gradKeyPath = backward ? args.RequireString("--grad-key") : null;
        var gradValuePath = backward ? args.RequireString("--grad-value") : null;
        var exportMaskPath = args.GetString("--export-mask");
        var dtype = args.GetChoice("--dtype", ["auto", "fp32", "fp16", "bf16"], "auto");
        if (backward && dtype is "fp16" or "bf16")
        {
            throw CliException.Usage("--backward runs in float32; use --dtype auto or fp32 with it.");
        }

        var (queryBlock, keyBlock) = ReadBlockSize(args.GetAxisValues("--block-size"));
        var options = new BlockSparseOptions { Scale = args.GetDouble("--scale") };
        if (args.GetString("--backend") is { } backend)
        {
            options = options with
            {
                Backend = BlockSparseAttention.BackendNames.FirstOrDefault(n => string.Equals(n, backend, StringComparison.OrdinalIgnoreCase))
                    ?? throw CliException.Usage($"--backend: '{backend}' is not a block-sparse backend; known: {string.Join(", ", BlockSparseAttention.BackendNames)}."),
            };
        }

        foreach (var option in new[] { "--kernel-size", "--stride", "--dilation", "--causal", "--additional-key", "--additional-value" })
        {
            if (args.GetString(option) is not null)
            {
                throw CliException.Usage($"{option} does not apply to block-sparse attention (--block-mask / --pattern).");
            }
        }

        args.ThrowIfUnused("run");
        foreach (var (option, path) in new[]
        {
            ("--output", outputPath), ("--lse", lsePath), ("--export-mask", exportMaskPath), ("--grad-query", gradQueryPath), ("--grad-key", gradKeyPath), ("--grad-value", gradValuePath),
        })
        {
            if (path is not null)
            {
                RunCommand.CheckOutputDirectory(option, path);
            }
        }

        var query = RunCommand.ReadInput("--query", queryPath);
        var key = RunCommand.ReadInput("--key", keyPath);
        var value = RunCommand.ReadInput("--value", valuePath);
        var shape = InferShape(query, key, value);
        using var mask = maskPath is not null
            ? FromFile(maskPath, shape, queryBlock, keyBlock)
            : FromPattern(pattern!, shape, query.Shape[1..^2], queryBlock, keyBlock);
        if (exportMaskPath is not null)
        {
            ExportMask(exportMaskPath, mask);
        }

        int[] outputShape = [.. query.Shape[..^1], shape.ValueDim];
        int[] lseShape = query.Shape[..^1];
        var lse = lsePath is null && !backward ? [] : new float[NpyArray.ElementCount(lseShape)];
        float[] output;
        if (dtype == "bf16")
        {
            static ushort[] Bits(NpyArray array) => [.. array.ToFloat32().Select(BFloat16Conversions.FromSingle)];
            var outputBits = new ushort[NpyArray.ElementCount(outputShape)];
            BlockSparseAttention.ForwardBFloat16(Bits(query), Bits(key), Bits(value), mask, shape, options, outputBits, lse);
            output = [.. outputBits.Select(BFloat16Conversions.ToSingle)];
        }
        else if (dtype == "fp16" || (dtype == "auto" && !backward && query.IsFloat16 && key.IsFloat16 && value.IsFloat16))
        {
            var output16 = new Half[NpyArray.ElementCount(outputShape)];
            BlockSparseAttention.Forward(query.ToFloat16(), key.ToFloat16(), value.ToFloat16(), mask, shape, options, output16, lse);
            output = [.. output16.Select(h => (float)h)];
        }
        else
        {
            output = new float[NpyArray.ElementCount(outputShape)];
            BlockSparseAttention.Forward(query.ToFloat32(), key.ToFloat32(), value.ToFloat32(), mask, shape, options, output, lse);
        }

        RunCommand.WriteOutput("--output", outputPath, outputShape, output);
        if (lsePath is not null)
        {
            RunCommand.WriteOutput("--lse", lsePath, lseShape, lse);
        }

        if (backward)
        {
            var gradOutput = RunCommand.ReadInput("--grad-output", gradOutputPath!);
            if (!gradOutput.Shape.SequenceEqual(outputShape))
            {
                throw CliException.Usage($"--grad-output has shape {gradOutput.ShapeText}; expected the output's shape ({string.Join(", ", outputShape)}).");
            }

            var (dq, dk, dv) = (new float[query.Length], new float[key.Length], new float[value.Length]);
            BlockSparseAttention.Backward(
                query.ToFloat32(), key.ToFloat32(), value.ToFloat32(), output, lse, gradOutput.ToFloat32(), mask, shape, options, dq, dk, dv);
            RunCommand.WriteOutput("--grad-query", gradQueryPath!, query.Shape, dq);
            RunCommand.WriteOutput("--grad-key", gradKeyPath!, key.Shape, dk);
            RunCommand.WriteOutput("--grad-value", gradValuePath!, value.Shape, dv);
        }

        return ExitCodes.Success;
    }

    /// <summary>Sizes from the arrays: Q [B, X.., H, D], K [B, Y.., Hkv, D], V [B, Y.., Hkv, Dv].</summary>
    internal static BlockSparseShape InferShape(NpyArray query, NpyArray key, NpyArray value)
    {
        foreach (var (option, array) in new[] { ("--query", query), ("--key", key), ("--value", value) })
        {
            if (array.Shape.Length is < 4 or > 6 || array.Shape.Contains(0))
            {
                throw CliException.Usage($"{option} has shape {array.ShapeText}; expected [B, tokens (1 to 3 axes), heads, dim] with no empty dimension.");
            }
        }

        var (q, k, v) = (query.Shape, key.Shape, value.Shape);
        if (k.Length != v.Length || !k[..^1].SequenceEqual(v[..^1]))
        {
            throw CliException.Usage($"--value has shape {value.ShapeText} but --key has {key.ShapeText}; all but the last dimension must match.");
        }

        if (k[0] != q[0] || k[^1] != q[^1])
        {
            throw CliException.Usage($"--key has shape {key.ShapeText} but --query has {query.ShapeText}; batch and head dimension must match.");
        }

        if (q[^2] % k[^2] != 0)
        {
            throw CliException.Usage($"--query has {q[^2]} heads but --key has {k[^2]}; the query heads must be a multiple of the key/value heads (GQA/MQA).");
        }

        static int Tokens(int[] s) => s[1..^2].Aggregate(1, (a, b) => checked(a * b));
        return new BlockSparseShape(q[0], Tokens(q), Tokens(k), q[^2], q[^1]) { KvHeads = k[^2], ValueDim = v[^1] };
    }

    internal static (int Query, int Key) ReadBlockSize(AxisValues? blockSize)
    {
        if (blockSize is not { } b)
        {
            return (64, 64);
        }

        return b.IsUniform ? (b[0], b[0]) : b.Count == 2 ? (b[0], b[1]) : throw CliException.Usage("--block-size takes one size or Bq x Bk (e.g. 64x128).");
    }

    private static BlockMask FromFile(string path, BlockSparseShape shape, int queryBlock, int keyBlock)
    {
        var (dims, values) = ReadIntegers("--block-mask", path);
        var heads = dims.Length switch
        {
            2 when dims[0] == shape.QueryTokens && dims[1] == shape.KeyTokens => 1,
            3 when dims[1] == shape.QueryTokens && dims[2] == shape.KeyTokens && (dims[0] == shape.Heads || dims[0] == 1) => dims[0],
            _ => throw CliException.Usage(
                $"--block-mask has shape {NpyArray.FormatShape(dims)}; expected [Nq={shape.QueryTokens}, Nk={shape.KeyTokens}] or [H={shape.Heads}, Nq, Nk]."),
        };
        var dense = new bool[values.Length];
        for (var i = 0; i < values.Length; i++)
        {
            dense[i] = values[i] switch
            {
                0 => false,
                1 => true,
                _ => throw CliException.Io($"--block-mask '{path}': element {i} is {values[i]}; a mask holds 0 or 1."),
            };
        }

        return BlockMask.FromDense(dense, shape.QueryTokens, shape.KeyTokens, queryBlock, keyBlock, heads);
    }

    /// <summary>
    /// Writes the dense allowed-pair mask of <paramref name="mask"/> as a bool .npy: <c>[H', Nq, Nk]</c>, or
    /// <c>[B', H', Nq, Nk]</c> when the mask has per-batch lists (B' = mask batches, H' = mask heads).
    /// Only listed blocks are walked; every pair is decided by <see cref="BlockMask.Allows"/>.
    /// </summary>
    internal static void ExportMask(string path, BlockMask mask)
    {
        var (nq, nk) = (mask.QueryTokens, mask.KeyTokens);
        var planes = (long)mask.Batches * mask.Heads;
        if (planes * nq * nk > Array.MaxLength)
        {
            throw CliException.Usage($"--export-mask: {planes}x{nq}x{nk} pairs do not fit one array.");
        }

        var dense = new bool[planes * nq * nk];
        for (var b = 0; b < mask.Batches; b++)
        {
            for (var h = 0; h < mask.Heads; h++)
            {
                var plane = ((long)b * mask.Heads) + h;
                for (var qb = 0; qb < mask.QueryBlocks; qb++)
                {
                    var (q0, q1) = (qb * mask.QueryBlockSize, Math.Min((qb + 1) * mask.QueryBlockSize, nq));
                    foreach (var block in mask.GetKeyBlocks(b, h, qb))
                    {
                        var (k0, k1) = (block.Index * mask.KeyBlockSize, Math.Min((block.Index + 1) * mask.KeyBlockSize, nk));
                        for (var q = q0; q < q1; q++)
                        {
                            for (var k = k0; k < k1; k++)
                            {
                                dense[(((plane * nq) + q) * nk) + k] = mask.Allows(b, h, q, k);
                            }
                        }
                    }
                }
            }
        }

        int[] shape = mask.Batches == 1 ? [mask.Heads, nq, nk] : [mask.Batches, mask.Heads, nq, nk];
        try
        {
            Npy.WriteBool(path, shape, dense);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw CliException.Io($"--export-mask '{path}': cannot write: {ex.Message}", ex);
        }
    }

    /// <summary>The block mask a <c>--pattern</c> names, for Q's token grid <paramref name="grid"/> (used by halo).</summary>
    internal static BlockMask FromPattern(string pattern, BlockSparseShape shape, int[] grid, int queryBlock, int keyBlock)
    {
        var colon = pattern.IndexOf(':', StringComparison.Ordinal);
        var name = colon < 0 ? pattern : pattern[..colon];
        var argument = colon < 0 ? null : pattern[(colon + 1)..];
        int[] Numbers(int min, int max)
        {
            var parts = (argument ?? string.Empty).Split(',', StringSplitOptions.TrimEntries);
            if (argument is null || parts.Length < min || parts.Length > max
                || !parts.All(p => int.TryParse(p, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out _)))
            {
                throw CliException.Usage($"--pattern '{pattern}': '{name}' takes {(min == max ? $"{min}" : $"{min} to {max}")} comma-separated integers.");
            }

            return [.. parts.Select(p => int.Parse(p, CultureInfo.InvariantCulture))];
        }

        void SelfAttention()
        {
            if (shape.QueryTokens != shape.KeyTokens)
            {
                throw CliException.Usage($"--pattern {name} is self-attention: Q has {shape.QueryTokens} tokens but K has {shape.KeyTokens}.");
            }
        }

        switch (name)
        {
            case "sliding":
                var window = Numbers(2, 2);
                return BlockMasks.SlidingWindow(shape.QueryTokens, shape.KeyTokens, window[0], window[1], queryBlock, keyBlock);
            case "causal" when argument is null:
                return BlockMasks.Causal(shape.QueryTokens, shape.KeyTokens, queryBlock, keyBlock);
            case "halo":
                SelfAttention();
                var halo = Numbers(2, 2);
                return BlockMasks.HaloNet(AxisValues.PerAxis(grid), halo[0], halo[1], queryBlock, keyBlock);
            case "segments" when !string.IsNullOrEmpty(argument):
                SelfAttention();
                var (_, ids) = ReadIntegers("--pattern segments", argument);
                var batches = ids.Length == shape.QueryTokens ? 1 : ids.Length == (long)shape.Batch * shape.QueryTokens ? shape.Batch
                    : throw CliException.Usage($"--pattern segments: the file holds {ids.Length} ids; expected N = {shape.QueryTokens} or B·N = {shape.Batch * shape.QueryTokens}.");
                return BlockMasks.Segments([.. ids.Select(i => (int)Math.Clamp(i, -1, int.MaxValue))], queryBlock, keyBlock, batches);
            case "documents":
                SelfAttention();
                return BlockMasks.Documents(Numbers(2, int.MaxValue), queryBlock, keyBlock);
            case "strided":
                SelfAttention();
                if (queryBlock != keyBlock)
                {
                    throw CliException.Usage("--pattern strided uses one block size for queries and keys; give --block-size B.");
                }

                var strided = Numbers(2, 3);
                return BlockMasks.StridedHeads(shape.QueryTokens, shape.Heads, queryBlock, strided[0], strided[1], strided.Length > 2 ? strided[2] : 0);
            case "padding":
                var lengths = Numbers(1, int.MaxValue);
                if (lengths.Length != 1 && lengths.Length != shape.Batch)
                {
                    throw CliException.Usage($"--pattern padding: give one key length or one per batch entry ({shape.Batch}); got {lengths.Length}.");
                }

                return BlockMasks.KeyPadding(lengths, shape.QueryTokens, shape.KeyTokens, queryBlock, keyBlock);
            default:
                throw CliException.Usage(
                    $"--pattern '{pattern}' is not one of sliding:L,R, causal, halo:b,h, segments:FILE, documents:0,N1,.., strided:LOCAL,STRIDE[,DENSE], padding:L[,L2..].");
        }
    }

    private static (int[] Shape, long[] Values) ReadIntegers(string option, string path)
    {
        try
        {
            return Npy.ReadIntegers(path);
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException)
        {
            throw CliException.Io($"{option} '{path}': {ex.Message}", ex);
        }
    }
}
