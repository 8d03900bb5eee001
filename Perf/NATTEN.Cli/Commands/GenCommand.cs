namespace Natten.Cli.Commands;

/// <summary>
/// <c>natten gen</c>: seeded random Q, K, V (and dO) as .npy in NATTEN's layout, for <c>natten run</c>
/// and for checking against other implementations (values uniform in [-1, 1), already rounded to the
/// requested storage type so every implementation sees the same numbers).
/// </summary>
internal static class GenCommand
{
    public static string UsageText =>
        """
        Usage: natten gen --shape X --out DIR [options]

        Writes q.npy [B, X.., H, D], k.npy and v.npy [B, X.., Hkv, D|Dv], and do.npy [B, X.., H, Dv]
        (float32 files; values uniform in [-1, 1) rounded to --round first).

          --shape X           spatial extents, e.g. 4096, 128x128 or 16x48x48
          --out DIR           output directory (created if missing)
          --batch B           batch size (default 1)
          --heads H           query heads (default 4)
          --kv-heads H        key/value heads (default: --heads)
          --dim D             head dimension (default 32)
          --value-dim D       value dimension (default: --dim)
          --round T           fp32 (default), fp16 or bf16: round the values to that type
          --seed N            random seed (default 0)
        """;

    public static int Execute(ArgumentReader args, TextWriter stdout)
    {
        if (args.WantsHelp)
        {
            stdout.WriteLine(UsageText);
            return ExitCodes.Success;
        }

        var spatial = args.RequireString("--shape").Split('x', 'X').Select(v =>
            int.TryParse(v, out var n) && n > 0 ? n : throw CliException.Usage($"--shape: '{v}' is not a positive integer.")).ToArray();
        if (spatial.Length is < 1 or > 3)
        {
            throw CliException.Usage("--shape needs 1 to 3 extents, e.g. 128x128.");
        }

        var directory = args.RequireString("--out");
        var batch = args.GetInt("--batch", 1, min: 1);
        var heads = args.GetInt("--heads", 4, min: 1);
        var kvHeads = args.GetInt("--kv-heads", heads, min: 1);
        var dim = args.GetInt("--dim", 32, min: 1);
        var valueDim = args.GetInt("--value-dim", dim, min: 1);
        var round = args.GetChoice("--round", ["fp32", "fp16", "bf16"], "fp32");
        var seed = args.GetInt("--seed", 0);
        args.ThrowIfUnused("gen");
        if (heads % kvHeads != 0)
        {
            throw CliException.Usage($"--heads ({heads}) must be a multiple of --kv-heads ({kvHeads}).");
        }

        Directory.CreateDirectory(directory);
        var rng = new Random(seed);
        Func<float, float> rounding = round switch
        {
            "fp16" => x => (float)(Half)x,
            "bf16" => x => BFloat16Conversions.ToSingle(BFloat16Conversions.FromSingle(x)),
            _ => x => x,
        };

        void Write(string name, int headCount, int width)
        {
            int[] shape = [batch, .. spatial, headCount, width];
            var data = new float[NpyArray.ElementCount(shape)];
            for (var i = 0; i < data.Length; i++)
            {
                data[i] = rounding((float)((rng.NextDouble() * 2) - 1));
            }

            Npy.Write(Path.Combine(directory, name), shape, data);
            stdout.WriteLine($"{name}: [{string.Join(", ", shape)}]");
        }

        Write("q.npy", heads, dim);
        Write("k.npy", kvHeads, dim);
        Write("v.npy", kvHeads, valueDim);
        Write("do.npy", heads, valueDim);
        return ExitCodes.Success;
    }
}
