using System.Globalization;

namespace Natten.Codegen;

/// <summary>
/// What the register-resident FlashAttention-2 forwards share (neighborhood attention,
/// <see cref="FnaRegisterKernelGenerator"/>, and block-sparse attention, <see cref="BlockSparseRegisterGenerator"/>):
/// the fragment structs, the Q fragment loads, S = Q·Kᵀ per chunk of keys with a caller-supplied masking line per
/// n-tile, the exp2 online-softmax step, O += P·V with P kept in registers, and the normalising store with a
/// caller-supplied row index. Every fragment register is a named scalar field and every fragment index a constant.
/// </summary>
/// <remarks>
/// The emitted code names its values <c>q</c>, <c>s</c>, <c>o</c>, <c>rows</c>, <c>kTile</c>, <c>vTile</c>,
/// <c>chunk</c>, <c>keys</c>, <c>t</c>, <c>scratch</c>, <c>output</c>, <c>lse</c>, <c>writeLse</c>; the signatures the
/// callers pass must declare them under these names.
/// </remarks>
public abstract class RegisterFragmentEmitter : CodeWriter
{
    protected RegisterFragmentEmitter(int headDim, int keyChunk)
    {
        if (headDim % 16 != 0 || keyChunk % 16 != 0 || keyChunk <= 0 || headDim <= 0)
        {
            throw new ArgumentException($"D ({headDim}) and the key chunk ({keyChunk}) must be positive multiples of 16.");
        }

        HeadDim = headDim;
        KeyChunk = keyChunk;
    }

    protected int HeadDim { get; }

    protected int KeyChunk { get; }

    protected int KSteps => HeadDim / 16;

    protected int ScoreTiles => KeyChunk / 8;

    protected int OutputTiles => HeadDim / 8;

    protected int Halves => KeyChunk / 16;

    protected int RowStride => HeadDim + 8;

    /// <summary>The A register <paramref name="register"/> of the Q fragment of k-step <paramref name="step"/>.</summary>
    protected static string Q(int step, int register) => string.Create(CultureInfo.InvariantCulture, $"K{step}A{register}");

    /// <summary>The structs <c>QueryFragments</c>, <c>ScoreTile</c> and <c>OutputTile</c>.</summary>
    protected void FragmentStructs()
    {
        Line($"/// <summary>This warp's Q rows as A fragments: k-step s (head columns 16s … 16s + 15), registers a0 … a3.</summary>");
        Line("internal struct QueryFragments");
        Open();
        for (var s = 0; s < KSteps; s++)
        {
            Line($"public uint {Q(s, 0)}, {Q(s, 1)}, {Q(s, 2)}, {Q(s, 3)};");
        }

        Close();
        Line();
        Line($"/// <summary>S (then P) for one chunk: n-tile n = keys 8n … 8n + 7 of the chunk, registers c0 … c3 (rows g, g, g + 8, g + 8).</summary>");
        Line("internal struct ScoreTile");
        Open();
        for (var n = 0; n < ScoreTiles; n++)
        {
            Line($"public float {C(n, 0)}, {C(n, 1)}, {C(n, 2)}, {C(n, 3)};");
        }

        Close();
        Line();
        Line($"/// <summary>O accumulators: n-tile n = value columns 8n … 8n + 7, registers c0 … c3 (rows g, g, g + 8, g + 8).</summary>");
        Line("internal struct OutputTile");
        Open();
        for (var n = 0; n < OutputTiles; n++)
        {
            Line($"public float {C(n, 0)}, {C(n, 1)}, {C(n, 2)}, {C(n, 3)};");
        }

        Close();
        Line();
    }

    /// <summary><c>LoadQuery&lt;TLoads&gt;(qTile, row0, ref q)</c>: the A fragments of a warp's 16 staged Q rows.</summary>
    protected void LoadQuery()
    {
        Line("/// <summary>");
        Line("/// A fragments of this warp's 16 Q rows (tile rows <paramref name=\"row0\"/> …): k-step s is the 16×16 block at head");
        Line("/// column 16s, a0 = (g, 16s + 2t), a1 = (g + 8, 16s + 2t), a2 = (g, 16s + 2t + 8), a3 = (g + 8, 16s + 2t + 8).");
        Line("/// </summary>");
        Inline();
        Line("private static void LoadQuery<TLoads>(ArrayView<ushort> qTile, int row0, ref QueryFragments q)");
        Line("    where TLoads : struct, IFragmentLoads");
        Open();
        for (var s = 0; s < KSteps; s++)
        {
            Line($"TLoads.Rows(qTile, RowStride, row0, {s * 16}, out q.{Q(s, 0)}, out q.{Q(s, 1)}, out q.{Q(s, 2)}, out q.{Q(s, 3)});");
        }

        Close();
        Line();
    }

    /// <summary>
    /// S = Q·Kᵀ for one chunk: per 16 keys (skipped, −∞, past <c>keys</c>; uniform over the group) the K fragments and
    /// mma of every k-step, then <paramref name="mask"/>(n) — one statement scaling and masking n-tile n in place.
    /// </summary>
    /// <param name="summary">The doc-comment lines (without the summary tags and slashes).</param>
    /// <param name="signature">The method header lines from <c>private static void Scores…</c> to the last constraint.</param>
    /// <param name="mask">The masking statement of n-tile n.</param>
    protected void Scores(IReadOnlyList<string> summary, IReadOnlyList<string> signature, Func<int, string> mask)
    {
        Line("/// <summary>");
        foreach (var line in summary)
        {
            Line($"/// {line}");
        }

        Line("/// </summary>");
        Inline();
        foreach (var line in signature)
        {
            Line(line);
        }

        Open();
        for (var h = 0; h < Halves; h++)
        {
            var first = h * 16;
            Line($"// Keys chunk + {first} … chunk + {first + 15}: n-tiles {2 * h}, {(2 * h) + 1}.");
            if (h > 0)
            {
                Line($"if (chunk + {first} < keys)");
                Open();
            }

            // k-step outer, n-tile inner: the two accumulator chains of this block interleave.
            for (var ks = 0; ks < KSteps; ks++)
            {
                var k = $"h{h}k{ks}";
                Line($"TLoads.Rows(kTile, RowStride, chunk{Plus(first)}, {ks * 16}, out var {k}r0, out var {k}r1, out var {k}r2, out var {k}r3);");
                Line($"TFormat.Mma(q.{Q(ks, 0)}, q.{Q(ks, 1)}, q.{Q(ks, 2)}, q.{Q(ks, 3)}, {k}r0, {k}r2, {Refs("s", 2 * h)}, scratch);");
                Line($"TFormat.Mma(q.{Q(ks, 0)}, q.{Q(ks, 1)}, q.{Q(ks, 2)}, q.{Q(ks, 3)}, {k}r1, {k}r3, {Refs("s", (2 * h) + 1)}, scratch);");
            }

            for (var n = 2 * h; n < (2 * h) + 2; n++)
            {
                Line(mask(n));
            }

            if (h > 0)
            {
                Close();
                Line("else");
                Open();
                for (var n = 2 * h; n < (2 * h) + 2; n++)
                {
                    Line($"s.{C(n, 0)} = s.{C(n, 1)} = s.{C(n, 2)} = s.{C(n, 3)} = float.NegativeInfinity;");
                }

                Close();
            }

            if (h < Halves - 1)
            {
                Line();
            }
        }

        Close();
        Line();
    }

    /// <summary><c>Softmax(ref s, ref o, ref rows)</c>: one online-softmax step in the exp2 domain.</summary>
    protected void Softmax()
    {
        Line("/// <summary>");
        Line("/// Online softmax step (exp2 domain): row max over the quad (lanes differing in t: xor 1, 2), rescale of O and");
        Line("/// of the lane's partial sums, P = exp2(S − max) in place (float32; the running sum uses it unrounded). A row");
        Line("/// with no allowed key so far keeps max −∞ and uses 0 for the exponent, so its P and O stay 0.");
        Line("/// </summary>");
        Inline();
        Line("private static void Softmax(ref ScoreTile s, ref OutputTile o, ref RowState rows)");
        Open();
        foreach (var (name, r0) in new[] { ("Top", 0), ("Bottom", 2) })
        {
            var lower = name.ToLowerInvariant();
            Line($"var max{name} = rows.Max{name};");
            for (var n = 0; n < ScoreTiles; n++)
            {
                Line($"max{name} = XMath.Max(max{name}, XMath.Max(s.{C(n, r0)}, s.{C(n, r0 + 1)}));");
            }

            Line($"max{name} = XMath.Max(max{name}, Warp.ShuffleXor(max{name}, 1));");
            Line($"max{name} = XMath.Max(max{name}, Warp.ShuffleXor(max{name}, 2));");
            Line($"var {lower}Exponent = max{name} == float.NegativeInfinity ? 0f : max{name};");
            Line($"var {lower}Correction = XMath.Exp2(rows.Max{name} - {lower}Exponent);");
            Line($"rows.Max{name} = max{name};");
            Line($"var sum{name} = 0f;");
            for (var n = 0; n < ScoreTiles; n++)
            {
                for (var e = r0; e < r0 + 2; e++)
                {
                    Line($"s.{C(n, e)} = XMath.Exp2(s.{C(n, e)} - {lower}Exponent);");
                    Line($"sum{name} += s.{C(n, e)};");
                }
            }

            Line($"rows.Sum{name} = (rows.Sum{name} * {lower}Correction) + sum{name};");
            for (var n = 0; n < OutputTiles; n++)
            {
                Line($"o.{C(n, r0)} *= {lower}Correction;");
                Line($"o.{C(n, r0 + 1)} *= {lower}Correction;");
            }

            if (r0 == 0)
            {
                Line();
            }
        }

        Close();
        Line();
    }

    /// <summary><c>UpdateOutput&lt;TFormat, TLoads&gt;(ref s, ref o, vTile, chunk, keys, scratch)</c>: O += P·V, P packed from S in registers.</summary>
    protected void UpdateOutput()
    {
        Line("/// <summary>");
        Line("/// O += P·V. K-step j of P is S n-tiles 2j, 2j + 1 rounded to the input format: a0 = (row g, n-tile 2j),");
        Line("/// a1 = (row g + 8, n-tile 2j), a2 = (row g, n-tile 2j + 1), a3 = (row g + 8, n-tile 2j + 1). The B fragment of");
        Line("/// output n-tile n is V column 8n + g, rows chunk + 16j + 2t, +1 (b0) and + 8, + 9 (b1): one transposed 16×16 block");
        Line("/// of V (keys × value columns 16c …) gives (r0, r1) for n-tile 2c and (r2, r3) for n-tile 2c + 1.");
        Line("/// </summary>");
        Inline();
        Line("private static void UpdateOutput<TFormat, TLoads>(ref ScoreTile s, ref OutputTile o, ArrayView<ushort> vTile, int chunk, int keys, ArrayView<uint> scratch)");
        Line("    where TFormat : struct, IHalfFormat");
        Line("    where TLoads : struct, IFragmentLoads");
        Open();
        for (var j = 0; j < Halves; j++)
        {
            var n0 = 2 * j;
            var n1 = n0 + 1;
            Line($"// Keys chunk + {j * 16} … chunk + {(j * 16) + 15}.");
            if (j > 0)
            {
                Line($"if (chunk + {j * 16} < keys)");
            }

            Open();
            Line($"var a0 = FnaRegisterTile.Pack<TFormat>(s.{C(n0, 0)}, s.{C(n0, 1)});");
            Line($"var a1 = FnaRegisterTile.Pack<TFormat>(s.{C(n0, 2)}, s.{C(n0, 3)});");
            Line($"var a2 = FnaRegisterTile.Pack<TFormat>(s.{C(n1, 0)}, s.{C(n1, 1)});");
            Line($"var a3 = FnaRegisterTile.Pack<TFormat>(s.{C(n1, 2)}, s.{C(n1, 3)});");
            for (var c = 0; c < OutputTiles / 2; c++)
            {
                var v = $"v{c}";
                Line($"TLoads.Columns(vTile, RowStride, chunk{Plus(j * 16)}, {c * 16}, out var {v}r0, out var {v}r1, out var {v}r2, out var {v}r3);");
                Line($"TFormat.Mma(a0, a1, a2, a3, {v}r0, {v}r1, {Refs("o", 2 * c)}, scratch);");
                Line($"TFormat.Mma(a0, a1, a2, a3, {v}r2, {v}r3, {Refs("o", (2 * c) + 1)}, scratch);");
            }

            Close();
            if (j < Halves - 1)
            {
                Line();
            }
        }

        Close();
        Line();
    }

    /// <summary>
    /// The store: quad-reduced sums, normalised O rounded to the input format and the LSE, for the rows
    /// <c>topRow</c> and <c>bottomRow</c> (flat query rows, negative when absent) that <paramref name="row"/>
    /// declares: row("top", "localTop") and row("bottom", "localTop + 8") each return one statement.
    /// </summary>
    /// <param name="signature">The method header lines from <c>private static void Store…</c> to the last constraint.</param>
    /// <param name="row">The statement declaring <c>{name}Row</c> for the tile-local row expression.</param>
    protected void Store(IReadOnlyList<string> signature, Func<string, string, string> row)
    {
        Line("/// <summary>");
        Line("/// Quad-reduces the row sums, normalises (a row without keys gives 0) and stores O rounded to the input");
        Line("/// format: lane (g, t) writes columns 8n + 2t, + 1 of rows g and g + 8; lane t = 0 writes the LSE (natural log).");
        Line("/// </summary>");
        foreach (var line in signature)
        {
            Line(line);
        }

        Open();
        Line("// Every lane shuffles before any lane branches on its row.");
        Line("var sumTop = rows.SumTop;");
        Line("sumTop += Warp.ShuffleXor(sumTop, 1);");
        Line("sumTop += Warp.ShuffleXor(sumTop, 2);");
        Line("var sumBottom = rows.SumBottom;");
        Line("sumBottom += Warp.ShuffleXor(sumBottom, 1);");
        Line("sumBottom += Warp.ShuffleXor(sumBottom, 2);");
        Line();
        foreach (var (name, r0, offset) in new[] { ("Top", 0, "localTop"), ("Bottom", 2, "localTop + 8") })
        {
            var lower = name.ToLowerInvariant();
            Line(row(lower, offset));
            Line($"if ({lower}Row >= 0)");
            Open();
            Line($"var inverse = sum{name} == 0f ? 0f : 1f / sum{name};");
            Line($"var at = ({lower}Row * HeadDim) + (2 * t);");
            for (var n = 0; n < OutputTiles; n++)
            {
                Line($"output[at{Plus(n * 8)}] = TFormat.FromFloat(o.{C(n, r0)} * inverse);");
                Line($"output[at + {(n * 8) + 1}] = TFormat.FromFloat(o.{C(n, r0 + 1)} * inverse);");
            }

            Line("if (writeLse != 0 && t == 0)");
            Open();
            Line($"lse[{lower}Row] = FnaRegisterTile.LogSumExp(rows.Max{name}, sum{name});");
            Close();
            Close();
            if (r0 == 0)
            {
                Line();
            }
        }

        Close();
    }
}
