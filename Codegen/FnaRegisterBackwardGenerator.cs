using System.Globalization;
using System.Text;

namespace Natten.Codegen;

/// <summary>
/// Writes the register-resident tensor-core query-gradient kernel (dQ) of the FlashAttention-2 backward on
/// <c>mma.sync</c> m16n8k16 for one head dimension (D = Dv): Q and dO fragments, S, dP, dS and the dQ
/// accumulators are named scalar fields indexed by constants only (ILGPU 1.5.3 does not unroll loops; a
/// loop-indexed per-thread array would stay in local memory).
/// </summary>
/// <remarks>
/// Per warp 16 query rows; per 16 staged keys: S = Q·Kᵀ and dP = dO·Vᵀ into two m16n8 tiles each, the forward's
/// per-element mask, P = exp2(S·scale·log2 e − LSE·log2 e), dS = P ∘ (dP − D) in place, then dS rounded and packed
/// in pairs is the A fragment of dQ += dS·K (the C → A register identity the forward uses for P).
/// </remarks>
public sealed class FnaRegisterBackwardGenerator : CodeWriter
{

    private readonly bool _keyValue;

    private FnaRegisterBackwardGenerator(int headDim, bool keyValue)
    {
        _keyValue = keyValue;
        if (headDim % 16 != 0 || headDim <= 0)
        {
            throw new ArgumentException($"D ({headDim}) must be a positive multiple of 16.");
        }

        HeadDim = headDim;
    }

    /// <summary>The head dimensions (D = Dv) the repository carries generated backward kernels for: those of the forward.</summary>
    public static IReadOnlyList<int> Variants { get; } = FnaRegisterKernelGenerator.Variants.Select(v => v.HeadDim).ToList();

    private int HeadDim { get; }

    private int KSteps => HeadDim / 16;

    private int OutputTiles => HeadDim / 8;

    private int RowStride => HeadDim + 8;

    private string ClassName => $"FnaTensorCoreQueryGradKernelD{HeadDim}";

    /// <summary>Repository-relative path of the generated dQ file for <paramref name="headDim"/>.</summary>
    public static string RelativePath(int headDim) => $"Kernels/Fused/Generated/FnaTensorCoreQueryGradKernel.D{headDim}.g.cs";

    /// <summary>Repository-relative path of the generated dK/dV file for <paramref name="headDim"/>.</summary>
    public static string KeyValueRelativePath(int headDim) => $"Kernels/Fused/Generated/FnaTensorCoreKeyValueGradKernel.D{headDim}.g.cs";

    /// <summary>The dQ file text (LF line ends, UTF-8 without BOM when written).</summary>
    public static string Generate(int headDim) => new FnaRegisterBackwardGenerator(headDim, false).Build();

    /// <summary>The dK/dV file text (LF line ends, UTF-8 without BOM when written).</summary>
    public static string GenerateKeyValue(int headDim) => new FnaRegisterBackwardGenerator(headDim, true).BuildKeyValue();

    /// <summary>Writes every variant under <paramref name="repositoryRoot"/>; returns the paths written.</summary>
    public static IReadOnlyList<string> WriteAll(string repositoryRoot)
    {
        var written = new List<string>();
        foreach (var d in Variants)
        {
            var path = Path.Combine(repositoryRoot, RelativePath(d));
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllText(path, Generate(d), new UTF8Encoding(false));
            written.Add(path);
            var keyValuePath = Path.Combine(repositoryRoot, KeyValueRelativePath(d));
            File.WriteAllText(keyValuePath, GenerateKeyValue(d), new UTF8Encoding(false));
            written.Add(keyValuePath);
        }

        return written;
    }

    private string Build()
    {
        FileHeader();
        Line("/// <summary>");
        Line($"/// Query gradient of the fused neighborhood attention backward on tensor cores for D = Dv = {HeadDim}, FlashAttention-2");
        Line("/// style with every fragment in registers. One group per (query tile, head, batch) as in");
        Line("/// <see cref=\"FnaTensorCoreBackwardKernels.QueryGrad{TFormat}\"/>; each warp owns 16 query rows. Q and dO fragments are");
        Line("/// loaded once; per KV sub-tile staged in shared memory (by the <see cref=\"IKvStaging\"/> type argument, by default 16-byte");
        Line("/// cp.async into two buffers, the next sub-tile in flight while one is computed) and per 16 keys: S = Q·Kᵀ and dP = dO·Vᵀ (two m16n8 tiles");
        Line("/// each), the forward's per-element mask, P = exp2(S − LSE) in the log2 domain, dS = P ∘ (dP − D) and");
        Line($"/// dQ += dS·K into {OutputTiles} m16n8 tiles, dS packed to 16-bit pairs as the A fragments. dQ · scale is stored once.");
        Line($"/// Without <c>mma.sync</c> the same calls run through <see cref=\"TensorCore.Emulate{{TFormat}}\"/> (control flow is");
        Line("/// uniform over the group, as the emulation's barriers require).");
        Line("/// </summary>");
        Line($"internal static class {ClassName}");
        Open();
        Constants();
        Structs();
        Entry();
        Block();
        LoadRows();
        Store();
        Close();
        return Text;
    }

    private void FileHeader()
    {
        Line("// <auto-generated>");
        Line($"//     Written by Codegen/FnaRegisterBackwardGenerator.cs ({(_keyValue ? "dK/dV" : "dQ")}, D = Dv = {HeadDim}).");
        Line("//     Do not edit: change the generator and run `dotnet run -c Release --project Codegen -- .` from the");
        Line("//     repository root. Tests/Kernels/GeneratedKernelTests.cs fails when this file and the generator disagree.");
        Line("// </auto-generated>");
        Line();
        Line("using System.Runtime.CompilerServices;");
        Line("using ILGPU;");
        Line("using ILGPU.Algorithms;");
        Line("using Natten.Kernels.Common;");
        Line("using Natten.Kernels.Cuda;");
        Line();
        Line("namespace Natten.Kernels.Fused.Generated;");
        Line();
    }

    private void Constants()
    {
        Line("/// <summary>Head dimension D = Dv this kernel is unrolled for.</summary>");
        Line($"public const int HeadDim = {HeadDim};");
        Line();
        Line("/// <summary>16-bit words per staged row: D plus 8 of padding, so the 8 rows of a fragment load hit 8 different bank groups (and every row starts 16-byte aligned, as ldmatrix needs).</summary>");
        Line($"public const int RowStride = {RowStride};");
        Line();
    }

    private void Structs()
    {
        Line("/// <summary>16 rows (Q, dO, K or V) as A fragments: k-step s (head columns 16s … 16s + 15), registers a0 … a3.</summary>");
        Line("internal struct RowFragments");
        Open();
        for (var s = 0; s < KSteps; s++)
        {
            Line($"public uint {A(s, 0)}, {A(s, 1)}, {A(s, 2)}, {A(s, 3)};");
        }

        Close();
        Line();
        Line("/// <summary>Scores or their gradients for 16 columns: n-tile n = columns 8n … 8n + 7, registers c0 … c3 (rows g, g, g + 8, g + 8).</summary>");
        Line("internal struct KeyBlock");
        Open();
        for (var n = 0; n < 2; n++)
        {
            Line($"public float {C(n, 0)}, {C(n, 1)}, {C(n, 2)}, {C(n, 3)};");
        }

        Close();
        Line();
        Line("/// <summary>Gradient accumulators (dQ, dK or dV): n-tile n = head columns 8n … 8n + 7, registers c0 … c3 (rows g, g, g + 8, g + 8).</summary>");
        Line("internal struct GradientTile");
        Open();
        for (var n = 0; n < OutputTiles; n++)
        {
            Line($"public float {C(n, 0)}, {C(n, 1)}, {C(n, 2)}, {C(n, 3)};");
        }

        Close();
        Line();
    }

    private void Entry()
    {
        Line("/// <summary>");
        Line("/// The kernel: same parameters and semantics as <see cref=\"FnaTensorCoreBackwardKernels.QueryGrad{TFormat}\"/> (p.HeadDim = p.ValueDim = HeadDim).");
        Line("/// <typeparamref name=\"TStaging\"/> stages the KV sub-tiles as in the forward (<see cref=\"AsyncStaging\"/>: 16-byte");
        Line("/// <c>cp.async</c> into two buffers, one sub-tile ahead; <see cref=\"ElementStaging\"/>: synchronous, one buffer).");
        Line("/// </summary>");
        Line("public static void QueryGrad<TFormat, TLoads, TStaging>(");
        Line("    ProblemParams p, FnaTileShape tile, ArrayView<ushort> query, ArrayView<ushort> key, ArrayView<ushort> value,");
        Line("    ArrayView<ushort> additionalKey, ArrayView<ushort> additionalValue, ArrayView<float> lse, ArrayView<float> rowTerm,");
        Line("    ArrayView<ushort> outputGrad, ArrayView<ushort> queryGrad)");
        Line("    where TFormat : struct, IHalfFormat");
        Line("    where TLoads : struct, IFragmentLoads");
        Line("    where TStaging : struct, IKvStaging");
        Open();
        Line("// Static shared memory: only the mma emulation's scratch (unused where mma.sync exists).");
        Line("var scratchAll = SharedMemory.Allocate<uint>(TensorCore.ScratchWordsPerWarp * FnaTensorCoreKernel.MaxWarps);");
        Line("TileAxis.ForGridIndex(p, tile, Grid.IdxX, out var axis0, out var axis1, out var axis2);");
        Line("if (axis0.IsEmpty || axis1.IsEmpty || axis2.IsEmpty)");
        Open();
        Line("return;");
        Close();
        Line();
        Line("var head = Grid.IdxY;");
        Line("var batch = Grid.IdxZ;");
        Line("var kvHead = p.KvHeadOf(head);");
        Line("var tid = Group.IdxX;");
        Line("var threads = Group.DimX;");
        Line("var warp = tid / 32;");
        Line("var lane = tid % 32;");
        Line("var g = lane / 4;");
        Line("var t = lane % 4;");
        Line("var scratch = scratchAll.SubView(warp * TensorCore.ScratchWordsPerWarp, TensorCore.ScratchWordsPerWarp);");
        Line("var keys = tile.KeyTile;");
        Line();
        Line("// Dynamic shared memory (16-bit words, rows RowStride apart): TStaging.Buffers KV buffers, each K [KV sub-tile] then");
        Line("// V [KV sub-tile]; Q and dO [query tile each] after the first TStaging.Lookahead buffers, which the prologue fills while");
        Line("// they are staged. Q and dO are read once into registers, so the later buffers overlap them: the barrier at the top of");
        Line("// step 0 orders those fragment loads before buffer Lookahead is refilled (one buffer: before the first sub-tile).");
        Line("var shared = SharedMemory.GetDynamic<ushort>();");
        Line("var kvWords = 2 * keys * RowStride;");
        Line("var rowsAt = TStaging.Lookahead * kvWords;");
        Line("var qTile = shared.SubView(rowsAt, tile.QueryTile * RowStride);");
        Line("var dOTile = shared.SubView(rowsAt + (tile.QueryTile * RowStride), tile.QueryTile * RowStride);");
        Line();
        Line("// The forward's walk: the neighborhood's KV sub-tiles (dynamic KV tiling), then the additional tokens (a window");
        Line("// [0, 1) × [0, 1) × [0, count) over slots (0, 0, slot)).");
        Line("var steps1 = (axis1.RangeEnd - axis1.RangeStart + tile.K1 - 1) / tile.K1;");
        Line("var steps2 = (axis2.RangeEnd - axis2.RangeStart + tile.K2 - 1) / tile.K2;");
        Line("var neighborhood = ((axis0.RangeEnd - axis0.RangeStart + tile.K0 - 1) / tile.K0) * steps1 * steps2;");
        Line("var steps = neighborhood + ((p.AdditionalTokens + keys - 1) / keys);");
        Line();
        Line("// Asynchronous staging runs one sub-tile ahead: sub-tile 0's copies fly while Q and dO are staged.");
        Line("if (TStaging.Lookahead > 0 && steps > 0)");
        Open();
        Line("KvStaging.Stage<TStaging>(");
        Line("    p, tile, axis0, axis1, axis2, steps1, steps2, neighborhood, 0, batch, kvHead, key, value, additionalKey, additionalValue,");
        Line("    shared.SubView(0, kvWords), RowStride, tid, threads);");
        Line("TStaging.Commit();");
        Close();
        Line();
        Line("FnaRegisterTile.StageQuery(p, tile, axis0, axis1, axis2, batch, head, query, qTile, RowStride, tid, threads);");
        Line("FnaRegisterTile.StageQuery(p, tile, axis0, axis1, axis2, batch, head, outputGrad, dOTile, RowStride, tid, threads);");
        Line("Group.Barrier();");
        Line("var localTop = (warp * 16) + g;");
        Line("var q = default(RowFragments);");
        Line("LoadRows<TLoads>(qTile, warp * 16, ref q);");
        Line("var dO = default(RowFragments);");
        Line("LoadRows<TLoads>(dOTile, warp * 16, ref dO);");
        Line("var dq = default(GradientTile);");
        Line();
        Line("// Per-row constants of the lane's rows g and g + 8: LSE in the log2 domain and D = dO·O (absent rows: 0, never stored).");
        Line("var topRow = TileAxis.QueryRow(p, tile, axis0, axis1, axis2, localTop, batch, head);");
        Line("var bottomRow = TileAxis.QueryRow(p, tile, axis0, axis1, axis2, localTop + 8, batch, head);");
        Line("var lseTop = FnaRegisterTile.RowLse(lse, topRow);");
        Line("var lseBottom = FnaRegisterTile.RowLse(lse, bottomRow);");
        Line("var dTop = topRow < 0 ? 0f : rowTerm[topRow];");
        Line("var dBottom = bottomRow < 0 ? 0f : rowTerm[bottomRow];");
        Line("var windowTop = FnaRegisterTile.Window(tile, axis0, axis1, axis2, localTop);");
        Line("var windowBottom = FnaRegisterTile.Window(tile, axis0, axis1, axis2, localTop + 8);");
        Line("var scoreScale = p.Scale * FnaRegisterTile.Log2E;");
        Line();
        Line("for (var step = 0; step < steps; step++)");
        Open();
        Line("// Every warp is done with the buffer the copies below overwrite: sub-tile step − 1's (two buffers; at step 0 the Q and");
        Line("// dO rows it overlaps) or this one's (one buffer).");
        Line("Group.Barrier();");
        Line("var ahead = step + TStaging.Lookahead;");
        Line("if (ahead < steps)");
        Open();
        Line("KvStaging.Stage<TStaging>(");
        Line("    p, tile, axis0, axis1, axis2, steps1, steps2, neighborhood, ahead, batch, kvHead, key, value, additionalKey, additionalValue,");
        Line("    shared.SubView(ahead % TStaging.Buffers * kvWords, kvWords), RowStride, tid, threads);");
        Close();
        Line();
        Line("// One group per step (empty near the end), so waiting for all but the newest Lookahead groups is waiting for sub-tile");
        Line("// step; the barrier then makes every thread's copies visible.");
        Line("TStaging.Commit();");
        Line("TStaging.Wait();");
        Line("Group.Barrier();");
        Line("var kvAt = step % TStaging.Buffers * kvWords;");
        Line("var kTile = shared.SubView(kvAt, keys * RowStride);");
        Line("var vTile = shared.SubView(kvAt + (keys * RowStride), keys * RowStride);");
        Line("bool inside;");
        Line("KeySlots slots;");
        Line("WindowMask top, bottom;");
        Line("if (step < neighborhood)");
        Open();
        Line("var a0 = axis0.RangeStart + (step / steps2 / steps1 * tile.K0);");
        Line("var a1 = axis1.RangeStart + (step / steps2 % steps1 * tile.K1);");
        Line("var a2 = axis2.RangeStart + (step % steps2 * tile.K2);");
        Line("inside = axis0.InsideEveryWindow(a0, tile.K0) && axis1.InsideEveryWindow(a1, tile.K1) && axis2.InsideEveryWindow(a2, tile.K2);");
        Line("slots = new KeySlots(a0, a1, a2, tile.K1, tile.K2);");
        Line("top = windowTop;");
        Line("bottom = windowBottom;");
        Close();
        Line("else");
        Open();
        Line("var m = (step - neighborhood) * keys;");
        Line("inside = m + keys <= p.AdditionalTokens;");
        Line("slots = new KeySlots(0, 0, 0, 1, keys);");
        Line("top = new WindowMask(0, 1, 0, 1, 0, p.AdditionalTokens - m);");
        Line("bottom = top;");
        Close();
        Line();
        Line("for (var block = 0; block < keys; block += 16)");
        Open();
        Line("if (inside)");
        Open();
        Line("Block<TFormat, TLoads, NoMask>(ref q, ref dO, ref dq, kTile, vTile, block, default, default, slots, scoreScale, lseTop, lseBottom, dTop, dBottom, t, scratch);");
        Close();
        Line("else");
        Open();
        Line("Block<TFormat, TLoads, WindowMask>(ref q, ref dO, ref dq, kTile, vTile, block, top, bottom, slots, scoreScale, lseTop, lseBottom, dTop, dBottom, t, scratch);");
        Close();
        Close();
        Close();
        Line();
        Line("Store<TFormat>(queryGrad, topRow, bottomRow, t, p.Scale, ref dq);");
        Close();
        Line();
    }

    private void Block()
    {
        Line("/// <summary>");
        Line("/// Keys block … block + 15 of the staged sub-tile. The B fragment of S n-tile n is K row block + 8n + g (b0 = columns");
        Line("/// 16s + 2t, + 1; b1 = + 8, + 9), of dP n-tile n the same V row. dS register pairs (n-tile 0: a0 = row g, a1 = row g + 8;");
        Line("/// n-tile 1: a2, a3) are the A fragment of dQ += dS·K, whose B fragment for n-tile n is K column 8n + g, rows");
        Line("/// block + 2t, + 1 (b0) and + 8, + 9 (b1). Fragments come in 16×16 blocks (<see cref=\"IFragmentLoads\"/>): K and V rows");
        Line("/// give (r0, r2) for n-tile 0 and (r1, r3) for n-tile 1; K transposed gives (r0, r1) for dQ n-tile 2c, (r2, r3) for 2c + 1.");
        Line("/// </summary>");
        Inline();
        Line("private static void Block<TFormat, TLoads, TMask>(");
        Line("    ref RowFragments q, ref RowFragments dO, ref GradientTile dq, ArrayView<ushort> kTile, ArrayView<ushort> vTile,");
        Line("    int block, TMask top, TMask bottom, KeySlots slots, float scoreScale, float lseTop, float lseBottom, float dTop, float dBottom,");
        Line("    int t, ArrayView<uint> scratch)");
        Line("    where TFormat : struct, IHalfFormat");
        Line("    where TLoads : struct, IFragmentLoads");
        Line("    where TMask : struct, IKeyMask");
        Open();
        Line("var s = default(KeyBlock);");
        Line("var dp = default(KeyBlock);");
        Line();
        Line("// S = Q·Kᵀ and dP = dO·Vᵀ: four independent accumulator chains, k-step outer.");
        for (var ks = 0; ks < KSteps; ks++)
        {
            RowProducts("q", "kTile", $"k{ks}", ks, "s");
            RowProducts("dO", "vTile", $"v{ks}", ks, "dp");
        }

        Line();
        Line("// Scale to the log2 domain and mask (−∞) exactly like the forward; P = exp2(S − LSE); dS = P (dP − D) in place.");
        for (var n = 0; n < 2; n++)
        {
            Line($"FnaRegisterTile.Mask(top, bottom, slots, block{Plus(n * 8)} + (2 * t), scoreScale, {Refs("s", n)});");
        }

        for (var n = 0; n < 2; n++)
        {
            for (var r = 0; r < 4; r++)
            {
                var row = r < 2 ? "Top" : "Bottom";
                Line($"s.{C(n, r)} = XMath.Exp2(s.{C(n, r)} - lse{row}) * (dp.{C(n, r)} - d{row});");
            }
        }

        Line();
        Line("// dQ += dS·K with dS rounded to the input format.");
        Line("var a0 = FnaRegisterTile.Pack<TFormat>(s.N0C0, s.N0C1);");
        Line("var a1 = FnaRegisterTile.Pack<TFormat>(s.N0C2, s.N0C3);");
        Line("var a2 = FnaRegisterTile.Pack<TFormat>(s.N1C0, s.N1C1);");
        Line("var a3 = FnaRegisterTile.Pack<TFormat>(s.N1C2, s.N1C3);");
        ColumnProducts("a", "kTile", "kt", "dq");

        Close();
        Line();
    }

    private void LoadRows()
    {
        Line("/// <summary>");
        Line("/// A fragments of this warp's 16 staged rows (tile rows <paramref name=\"row0\"/> …): k-step s is the 16×16 block at");
        Line("/// column 16s, a0 = (g, 16s + 2t), a1 = (g + 8, 16s + 2t), a2 = (g, 16s + 2t + 8), a3 = (g + 8, 16s + 2t + 8).");
        Line("/// </summary>");
        Inline();
        Line("private static void LoadRows<TLoads>(ArrayView<ushort> rows, int row0, ref RowFragments f)");
        Line("    where TLoads : struct, IFragmentLoads");
        Open();
        for (var s = 0; s < KSteps; s++)
        {
            Line($"TLoads.Rows(rows, RowStride, row0, {s * 16}, out f.{A(s, 0)}, out f.{A(s, 1)}, out f.{A(s, 2)}, out f.{A(s, 3)});");
        }

        Close();
        Line();
    }

    /// <summary>
    /// k-step <paramref name="ks"/> of a 16-key (or 16-query) block against A fragments <paramref name="a"/>: the block's
    /// rows of <paramref name="tile"/> as B fragments, (r0, r2) into n-tile 0 and (r1, r3) into n-tile 1 of <paramref name="owner"/>.
    /// </summary>
    private void RowProducts(string a, string tile, string name, int ks, string owner)
    {
        var fragment = $"{a}.{A(ks, 0)}, {a}.{A(ks, 1)}, {a}.{A(ks, 2)}, {a}.{A(ks, 3)}";
        Line($"TLoads.Rows({tile}, RowStride, block, {ks * 16}, out var {name}r0, out var {name}r1, out var {name}r2, out var {name}r3);");
        Line($"TFormat.Mma({fragment}, {name}r0, {name}r2, {Refs(owner, 0)}, scratch);");
        Line($"TFormat.Mma({fragment}, {name}r1, {name}r3, {Refs(owner, 1)}, scratch);");
    }

    /// <summary>
    /// <paramref name="owner"/> += (A fragment <paramref name="a"/>0 … 3)·(block rows of <paramref name="tile"/>): each 16-column
    /// block transposed gives (r0, r1) for n-tile 2c and (r2, r3) for n-tile 2c + 1.
    /// </summary>
    private void ColumnProducts(string a, string tile, string name, string owner)
    {
        for (var c = 0; c < OutputTiles / 2; c++)
        {
            var n = $"{name}{c}";
            Line($"TLoads.Columns({tile}, RowStride, block, {c * 16}, out var {n}r0, out var {n}r1, out var {n}r2, out var {n}r3);");
            Line($"TFormat.Mma({a}0, {a}1, {a}2, {a}3, {n}r0, {n}r1, {Refs(owner, 2 * c)}, scratch);");
            Line($"TFormat.Mma({a}0, {a}1, {a}2, {a}3, {n}r2, {n}r3, {Refs(owner, (2 * c) + 1)}, scratch);");
        }
    }

    private void Store()
    {
        Line("/// <summary>dQ · scale rounded to the input format: lane (g, t) writes columns 8n + 2t, + 1 of rows g and g + 8.</summary>");
        Line("private static void Store<TFormat>(ArrayView<ushort> queryGrad, long topRow, long bottomRow, int t, float scale, ref GradientTile dq)");
        Line("    where TFormat : struct, IHalfFormat");
        Open();
        foreach (var (name, r0) in new[] { ("top", 0), ("bottom", 2) })
        {
            Line($"if ({name}Row >= 0)");
            Open();
            Line($"var at = ({name}Row * HeadDim) + (2 * t);");
            StoreRow("queryGrad", "dq", r0, " * scale");

            Close();
            if (r0 == 0)
            {
                Line();
            }
        }

        Close();
    }

    private string BuildKeyValue()
    {
        FileHeader();
        Line("/// <summary>");
        Line($"/// Key and value gradients of the fused neighborhood attention backward on tensor cores for D = Dv = {HeadDim},");
        Line("/// FlashAttention-2 style with every fragment in registers. One group per (key tile, kv head, batch) as in");
        Line("/// <see cref=\"FnaTensorCoreBackwardKernels.KeyValueGrad{TFormat}\"/>, over the inverse neighborhood in query sub-tiles and");
        Line("/// every query head of the kv group (a fixed order: deterministic). Each warp owns 16 keys: K and V fragments are loaded");
        Line("/// once; per 16 staged queries: Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ (two m16n8 tiles each), Pᵀ = exp2(Sᵀ − LSE) where the query");
        Line("/// sees the key, dSᵀ = Pᵀ ∘ (dPᵀ − D), then Pᵀ and dSᵀ packed to 16-bit pairs as the A fragments of dV += Pᵀ·dO and");
        Line($"/// dK += dSᵀ·Q ({OutputTiles} m16n8 tiles each). dK · scale and dV are stored once.");
        Line("/// </summary>");
        Line($"internal static class FnaTensorCoreKeyValueGradKernelD{HeadDim}");
        Open();
        Constants();
        Structs();
        KeyValueEntry();
        KeyValueBlock();
        LoadRows();
        KeyValueStore();
        Close();
        return Text;
    }

    private void KeyValueEntry()
    {
        Line("/// <summary>");
        Line("/// The kernel: same parameters and semantics as <see cref=\"FnaTensorCoreBackwardKernels.KeyValueGrad{TFormat}\"/> (p.HeadDim = p.ValueDim = HeadDim).");
        Line("/// <typeparamref name=\"TStaging\"/> stages the query sub-tiles' Q and dO rows (<see cref=\"AsyncStaging\"/>: 16-byte");
        Line("/// <c>cp.async</c> into two buffers, one step ahead; <see cref=\"ElementStaging\"/>: synchronous, one buffer); the per-query");
        Line("/// LSE and D stay synchronous, in one buffer ordered by the step's two barriers.");
        Line("/// </summary>");
        Line("public static void KeyValueGrad<TFormat, TLoads, TStaging>(");
        Line("    ProblemParams p, FnaTileShape tile, ArrayView<ushort> query, ArrayView<ushort> key, ArrayView<ushort> value, ArrayView<float> lse,");
        Line("    ArrayView<float> rowTerm, ArrayView<ushort> outputGrad, ArrayView<ushort> keyGrad, ArrayView<ushort> valueGrad)");
        Line("    where TFormat : struct, IHalfFormat");
        Line("    where TLoads : struct, IFragmentLoads");
        Line("    where TStaging : struct, IKvStaging");
        Open();
        Line("// Static shared memory: the mma emulation's scratch and the staged queries' LSE (log2 domain) and D.");
        Line("var scratchAll = SharedMemory.Allocate<uint>(TensorCore.ScratchWordsPerWarp * FnaTensorCoreKernel.MaxWarps);");
        Line("var queryLse = SharedMemory.Allocate<float>(FnaTensorCoreBackwardKernels.MaxScores / 16);");
        Line("var queryD = SharedMemory.Allocate<float>(FnaTensorCoreBackwardKernels.MaxScores / 16);");
        Line();
        Line("// Roles swap as in the version-1 kernel: the group's tile holds keys (tile.Q*), sub-tiles hold queries (tile.K*).");
        Line("InverseTileAxis.ForGridIndex(p, tile, Grid.IdxX, out var axis0, out var axis1, out var axis2);");
        Line("if (axis0.IsEmpty || axis1.IsEmpty || axis2.IsEmpty)");
        Open();
        Line("return;");
        Close();
        Line();
        Line("var kvHead = Grid.IdxY;");
        Line("var batch = Grid.IdxZ;");
        Line("var group = p.Heads / p.KvHeads;");
        Line("var tid = Group.IdxX;");
        Line("var threads = Group.DimX;");
        Line("var warp = tid / 32;");
        Line("var lane = tid % 32;");
        Line("var g = lane / 4;");
        Line("var t = lane % 4;");
        Line("var scratch = scratchAll.SubView(warp * TensorCore.ScratchWordsPerWarp, TensorCore.ScratchWordsPerWarp);");
        Line("var queries = tile.KeyTile;");
        Line();
        Line("// Dynamic shared memory (16-bit words, rows RowStride apart): TStaging.Buffers query buffers, each Q [query sub-tile]");
        Line("// then dO [query sub-tile]; K and V [key tile each] after the first TStaging.Lookahead buffers, which the prologue fills");
        Line("// while they are staged. K and V are read once into registers, so the later buffers overlap them: the barrier at the top");
        Line("// of step 0 orders those fragment loads before buffer Lookahead is refilled (one buffer: before the first sub-tile).");
        Line("var shared = SharedMemory.GetDynamic<ushort>();");
        Line("var subWords = 2 * queries * RowStride;");
        Line("var rowsAt = TStaging.Lookahead * subWords;");
        Line("var kTile = shared.SubView(rowsAt, tile.QueryTile * RowStride);");
        Line("var vTile = shared.SubView(rowsAt + (tile.QueryTile * RowStride), tile.QueryTile * RowStride);");
        Line();
        Line("// One step per (query sub-tile, query head of the kv group): sub-tiles row-major over the inverse ranges, heads inner —");
        Line("// the fixed order of the version-1 kernel (FnaRegisterBackwardTile.Step).");
        Line("var steps1 = FnaRegisterBackwardTile.SubTiles(axis1, tile.K1);");
        Line("var steps2 = FnaRegisterBackwardTile.SubTiles(axis2, tile.K2);");
        Line("var steps = FnaRegisterBackwardTile.SubTiles(axis0, tile.K0) * steps1 * steps2 * group;");
        Line();
        Line("// Asynchronous staging runs one step ahead: step 0's copies fly while K and V are staged.");
        Line("if (TStaging.Lookahead > 0 && steps > 0)");
        Open();
        Line("FnaRegisterBackwardTile.Stage<TStaging>(");
        Line("    p, tile, axis0, axis1, axis2, steps1, steps2, group, kvHead, 0, batch, query, outputGrad, shared.SubView(0, subWords), RowStride, tid, threads);");
        Line("TStaging.Commit();");
        Close();
        Line();
        Line("FnaRegisterBackwardTile.StageKeys(p, tile, axis0, axis1, axis2, batch, kvHead, key, kTile, RowStride, tid, threads);");
        Line("FnaRegisterBackwardTile.StageKeys(p, tile, axis0, axis1, axis2, batch, kvHead, value, vTile, RowStride, tid, threads);");
        Line("Group.Barrier();");
        Line("var localTop = (warp * 16) + g;");
        Line("var k = default(RowFragments);");
        Line("LoadRows<TLoads>(kTile, warp * 16, ref k);");
        Line("var v = default(RowFragments);");
        Line("LoadRows<TLoads>(vTile, warp * 16, ref v);");
        Line("var dk = default(GradientTile);");
        Line("var dv = default(GradientTile);");
        Line("var scoreScale = p.Scale * FnaRegisterTile.Log2E;");
        Line();
        Line("for (var step = 0; step < steps; step++)");
        Open();
        Line("// Every warp is done with the buffer the copies below overwrite (step − 1's with two buffers; at step 0 the K and V");
        Line("// rows it overlaps; this one's with one buffer) and with step − 1's LSE and D.");
        Line("Group.Barrier();");
        Line("var ahead = step + TStaging.Lookahead;");
        Line("if (ahead < steps)");
        Open();
        Line("FnaRegisterBackwardTile.Stage<TStaging>(");
        Line("    p, tile, axis0, axis1, axis2, steps1, steps2, group, kvHead, ahead, batch, query, outputGrad,");
        Line("    shared.SubView(ahead % TStaging.Buffers * subWords, subWords), RowStride, tid, threads);");
        Close();
        Line();
        Line("// One copy group per step (empty near the end). This step's LSE and D are loaded synchronously into the one scalar");
        Line("// buffer, between the barrier above (its previous readers are done) and the one below (it is visible before use).");
        Line("TStaging.Commit();");
        Line("FnaRegisterBackwardTile.Step(tile, axis0, axis1, axis2, steps1, steps2, group, kvHead, step, out var a0, out var a1, out var a2, out var h);");
        Line("FnaRegisterBackwardTile.StageQueryTerms(p, tile, axis0, axis1, axis2, a0, a1, a2, batch, h, lse, rowTerm, queryLse, queryD, tid, threads);");
        Line("TStaging.Wait();");
        Line("Group.Barrier();");
        Line("var at = step % TStaging.Buffers * subWords;");
        Line("var qSub = shared.SubView(at, queries * RowStride);");
        Line("var doSub = shared.SubView(at + (queries * RowStride), queries * RowStride);");
        Line("var inside = axis0.InsideEveryRange(a0, tile.K0) && axis1.InsideEveryRange(a1, tile.K1) && axis2.InsideEveryRange(a2, tile.K2);");
        Line("for (var block = 0; block < queries; block += 16)");
        Open();
        Line("Block<TFormat, TLoads>(");
        Line("    ref k, ref v, ref dk, ref dv, qSub, doSub, block, tile, axis0, axis1, axis2, inside, a0, a1, a2, localTop,");
        Line("    scoreScale, queryLse, queryD, t, scratch);");
        Close();
        Close();
        Line();
        Line("var topRow = InverseTileAxis.KeyRow(p, tile, axis0, axis1, axis2, localTop, batch, kvHead);");
        Line("var bottomRow = InverseTileAxis.KeyRow(p, tile, axis0, axis1, axis2, localTop + 8, batch, kvHead);");
        Line("Store<TFormat>(keyGrad, valueGrad, topRow, bottomRow, t, p.Scale, ref dk, ref dv);");
        Close();
        Line();
    }

    private void KeyValueBlock()
    {
        Line("/// <summary>");
        Line("/// Queries block … block + 15 of the staged sub-tile. The B fragment of Sᵀ n-tile n is Q row block + 8n + g (b0 = columns");
        Line("/// 16s + 2t, + 1; b1 = + 8, + 9), of dPᵀ n-tile n the same dO row. Lane (g, t) holds keys localTop, localTop + 8 and");
        Line("/// query slots block + 8n + 2t, + 1. Pᵀ and dSᵀ register pairs are the A fragments of dV += Pᵀ·dO and dK += dSᵀ·Q,");
        Line("/// whose B fragment for n-tile n is dO (Q) column 8n + g, rows block + 2t, + 1 (b0) and + 8, + 9 (b1). Fragments come");
        Line("/// in 16×16 blocks (<see cref=\"IFragmentLoads\"/>), as in the query-gradient kernel.");
        Line("/// </summary>");
        Inline();
        Line("private static void Block<TFormat, TLoads>(");
        Line("    ref RowFragments k, ref RowFragments v, ref GradientTile dk, ref GradientTile dv,");
        Line("    ArrayView<ushort> qSub, ArrayView<ushort> doSub, int block, FnaTileShape tile, InverseTileAxis axis0, InverseTileAxis axis1,");
        Line("    InverseTileAxis axis2, bool inside, int a0, int a1, int a2, int localTop, float scoreScale, ArrayView<float> queryLse,");
        Line("    ArrayView<float> queryD, int t, ArrayView<uint> scratch)");
        Line("    where TFormat : struct, IHalfFormat");
        Line("    where TLoads : struct, IFragmentLoads");
        Open();
        Line("var s = default(KeyBlock);");
        Line("var dp = default(KeyBlock);");
        Line();
        Line("// Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ: four independent accumulator chains, k-step outer.");
        for (var ks = 0; ks < KSteps; ks++)
        {
            RowProducts("k", "qSub", $"q{ks}", ks, "s");
            RowProducts("v", "doSub", $"o{ks}", ks, "dp");
        }

        Line();
        Line("// Pᵀ into s and dSᵀ into dp, element by element (no control flow around the mma calls).");
        for (var n = 0; n < 2; n++)
        {
            for (var r = 0; r < 4; r++)
            {
                var keyRow = r < 2 ? "localTop" : "localTop + 8";
                var slot = $"block + {(n * 8) + (r % 2)} + (2 * t)";
                Line($"dp.{C(n, r)} = FnaRegisterBackwardTile.ScoreGrad(");
                Line($"    FnaRegisterBackwardTile.Sees(tile, axis0, axis1, axis2, inside, a0, a1, a2, {keyRow}, {slot}), s.{C(n, r)}, dp.{C(n, r)}, scoreScale, queryLse, queryD, {slot}, out s.{C(n, r)});");
            }
        }

        Line();
        Line("// dV += Pᵀ·dO and dK += dSᵀ·Q with Pᵀ and dSᵀ rounded to the input format.");
        Line("var p0 = FnaRegisterTile.Pack<TFormat>(s.N0C0, s.N0C1);");
        Line("var p1 = FnaRegisterTile.Pack<TFormat>(s.N0C2, s.N0C3);");
        Line("var p2 = FnaRegisterTile.Pack<TFormat>(s.N1C0, s.N1C1);");
        Line("var p3 = FnaRegisterTile.Pack<TFormat>(s.N1C2, s.N1C3);");
        Line("var d0 = FnaRegisterTile.Pack<TFormat>(dp.N0C0, dp.N0C1);");
        Line("var d1 = FnaRegisterTile.Pack<TFormat>(dp.N0C2, dp.N0C3);");
        Line("var d2 = FnaRegisterTile.Pack<TFormat>(dp.N1C0, dp.N1C1);");
        Line("var d3 = FnaRegisterTile.Pack<TFormat>(dp.N1C2, dp.N1C3);");
        ColumnProducts("p", "doSub", "ot", "dv");
        ColumnProducts("d", "qSub", "qt", "dk");

        Close();
        Line();
    }

    /// <summary>
    /// One row of a gradient tile (registers <paramref name="r0"/>, <paramref name="r0"/> + 1 of every n-tile of
    /// <paramref name="tile"/>), times <paramref name="factor"/>, rounded to the input format into <paramref name="target"/> at <c>at</c>.
    /// </summary>
    private void StoreRow(string target, string tile, int r0, string factor)
    {
        for (var n = 0; n < OutputTiles; n++)
        {
            Line($"{target}[at{Plus(n * 8)}] = TFormat.FromFloat({tile}.{C(n, r0)}{factor});");
            Line($"{target}[at + {(n * 8) + 1}] = TFormat.FromFloat({tile}.{C(n, r0 + 1)}{factor});");
        }
    }

    private void KeyValueStore()
    {
        Line("/// <summary>dK · scale and dV rounded to the input format: lane (g, t) writes columns 8n + 2t, + 1 of key rows g and g + 8.</summary>");
        Line("private static void Store<TFormat>(");
        Line("    ArrayView<ushort> keyGrad, ArrayView<ushort> valueGrad, long topRow, long bottomRow, int t, float scale, ref GradientTile dk, ref GradientTile dv)");
        Line("    where TFormat : struct, IHalfFormat");
        Open();
        foreach (var (name, r0) in new[] { ("top", 0), ("bottom", 2) })
        {
            Line($"if ({name}Row >= 0)");
            Open();
            Line($"var at = ({name}Row * HeadDim) + (2 * t);");
            StoreRow("keyGrad", "dk", r0, " * scale");
            StoreRow("valueGrad", "dv", r0, string.Empty);

            Close();
            if (r0 == 0)
            {
                Line();
            }
        }

        Close();
    }

    private static string A(int step, int register) => string.Create(CultureInfo.InvariantCulture, $"K{step}A{register}");
}
