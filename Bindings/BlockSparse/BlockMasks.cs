using Natten.BlockSparse;

namespace Natten;

/// <summary>
/// Ready-made block-sparse patterns from the papers around neighborhood attention, each a
/// <see cref="BlockMask"/> checked against the Reference's dense-mask oracle in the tests. Token
/// sequences are flat; 2D/3D grids are flattened row-major unless a builder says otherwise.
/// </summary>
public static class BlockMasks
{
    /// <summary>
    /// A 1D sliding window with separate left and right sizes, FlashAttention's <c>window_size</c>
    /// semantics (FlashAttention-2, Dao 2023; the local attention of Longformer, Beltagy et al. 2020, and
    /// Mistral 7B, Jiang et al. 2023): query <c>q</c> sees keys <c>q + Nk − Nq − left … q + Nk − Nq + right</c>,
    /// truncated at the sequence ends — never shifted, unlike neighborhood attention.
    /// </summary>
    /// <param name="queryTokens">Nq.</param>
    /// <param name="keyTokens">Nk.</param>
    /// <param name="left">Keys to the left; −1 for no limit.</param>
    /// <param name="right">Keys to the right; −1 for no limit (0 with <c>left = −1</c> is causal).</param>
    /// <param name="queryBlockSize">Bq.</param>
    /// <param name="keyBlockSize">Bk.</param>
    /// <param name="device">Build the lists on this accelerator (<see cref="BlockMask.CreateOnDevice"/>); null (the default) builds them on the host.</param>
    /// <returns>The mask: blocks inside every window full, border blocks partial.</returns>
    /// <exception cref="ArgumentException">A size is below 1 or a window side below −1.</exception>
    public static BlockMask SlidingWindow(
        int queryTokens, int keyTokens, int left, int right, int queryBlockSize, int keyBlockSize, AttentionDevice? device = null)
        => Build(device, ElementMask.SlidingWindow(left, right, keyTokens - queryTokens), queryTokens, keyTokens, queryBlockSize, keyBlockSize);

    /// <summary>
    /// Causal attention with FlashAttention's bottom-right alignment (query <c>q</c> sees keys
    /// <c>k ≤ q + Nk − Nq</c>; plain <c>k ≤ q</c> for self-attention): <see cref="SlidingWindow"/> with
    /// <c>(−1, 0)</c>.
    /// </summary>
    /// <param name="queryTokens">Nq.</param>
    /// <param name="keyTokens">Nk.</param>
    /// <param name="queryBlockSize">Bq.</param>
    /// <param name="keyBlockSize">Bk.</param>
    /// <param name="device">Build the lists on this accelerator (<see cref="BlockMask.CreateOnDevice"/>); null (the default) builds them on the host.</param>
    /// <returns>The mask.</returns>
    /// <exception cref="ArgumentException">A size is below 1.</exception>
    public static BlockMask Causal(int queryTokens, int keyTokens, int queryBlockSize, int keyBlockSize, AttentionDevice? device = null)
        => SlidingWindow(queryTokens, keyTokens, -1, 0, queryBlockSize, keyBlockSize, device);

    /// <summary>
    /// S2-Attention / DKernel strided heads (Lin et al. 2024, "S2-Attention: Hardware-Aware Context
    /// Sharding Among Attention Heads"): each head attends to a different shard of the context. At block
    /// granularity (blocks of <paramref name="blockSize"/> tokens), a sparse head sees its
    /// <paramref name="localBlocks"/> nearest key blocks (the query's own and the ones before it; also the
    /// ones after it when not causal) plus every <paramref name="verticalStride"/>-th block starting at its
    /// own offset <c>(h − denseHeads) mod verticalStride</c>; heads <c>0 … denseHeads − 1</c> are dense. Any
    /// <paramref name="verticalStride"/> consecutive sparse heads together cover every key block (the union
    /// covers the context). Causal masking is FlashAttention's (<c>k ≤ q</c>); diagonal blocks are partial.
    /// </summary>
    /// <param name="tokens">Sequence length (self-attention).</param>
    /// <param name="heads">Query heads (the mask is per head).</param>
    /// <param name="blockSize">Tokens per block, for both queries and keys.</param>
    /// <param name="localBlocks">Local key blocks per side (the query's own block counts), at least 1.</param>
    /// <param name="verticalStride">Stride of the vertical (strided) blocks, at least 1.</param>
    /// <param name="denseHeads">Heads that attend densely (0 to <paramref name="heads"/>).</param>
    /// <param name="causal">Causal attention (decoder models).</param>
    /// <param name="device">Build the lists on this accelerator (<see cref="BlockMask.CreateOnDevice"/>); null (the default) builds them on the host.</param>
    /// <returns>A per-head block mask.</returns>
    /// <exception cref="ArgumentException">A size is out of range.</exception>
    public static BlockMask StridedHeads(
        int tokens, int heads, int blockSize, int localBlocks, int verticalStride, int denseHeads = 0, bool causal = true, AttentionDevice? device = null)
    {
        ProblemValidator.CheckStridedHeads(tokens, heads, blockSize, localBlocks, verticalStride, denseHeads);
        var blocks = (tokens + blockSize - 1) / blockSize;
        var flags = new bool[(long)heads * blocks * blocks];
        for (var h = 0; h < heads; h++)
        {
            var offset = h < denseHeads ? 0 : (h - denseHeads) % verticalStride;
            for (var qb = 0; qb < blocks; qb++)
            {
                for (var kb = 0; kb < blocks; kb++)
                {
                    var distance = qb - kb;
                    var local = causal ? distance >= 0 && distance < localBlocks : Math.Abs(distance) < localBlocks;
                    var vertical = (kb - offset) % verticalStride == 0 && kb >= offset;
                    flags[((((long)h * blocks) + qb) * blocks) + kb] = (!causal || kb <= qb) && (h < denseHeads || local || vertical);
                }
            }
        }

        var elementMask = causal ? ElementMask.Causal : null;
        return device is null
            ? BlockMask.FromBlocks(flags, tokens, tokens, blockSize, blockSize, heads, 1, elementMask)
            : BlockMask.FromBlocksOnDevice(device, flags, tokens, tokens, blockSize, blockSize, heads, 1, elementMask);
    }

    /// <summary>
    /// HaloNet's blocked local self-attention (Vaswani et al. 2021, "Scaling Local Self-Attention for
    /// Parameter Efficient Visual Backbones") on a 2D or 3D grid: the grid is cut into blocks of
    /// <paramref name="block"/> per axis, and every query of a block attends to the block grown by a halo of
    /// <paramref name="halo"/> on each side — (b + 2h) per axis — with zero-padded borders: keys outside
    /// the grid are simply absent (neighborhood attention instead shifts its window inward). Tokens are in
    /// block order (block-major, row-major inside a block), so each query block is one contiguous run of
    /// <c>b^rank</c> tokens and the mask's blocks are exactly HaloNet's.
    /// </summary>
    /// <param name="extents">The grid (1 to 3 axes); <paramref name="block"/> must divide each extent.</param>
    /// <param name="block">Block size b per axis.</param>
    /// <param name="halo">Halo h (0 gives non-overlapping blocked attention).</param>
    /// <param name="device">Build the lists on this accelerator (<see cref="BlockMask.CreateOnDevice"/>); null (the default) builds them on the host.</param>
    /// <returns>The mask; its query and key blocks are the b^rank-token HaloNet blocks.</returns>
    /// <exception cref="ArgumentException">A size is out of range or <paramref name="block"/> does not divide an extent.</exception>
    public static BlockMask HaloNet(AxisValues extents, int block, int halo, AttentionDevice? device = null)
    {
        var mask = ElementMask.GridWindow(extents, block, halo, halo, block);
        var rank = extents.IsUniform ? 1 : extents.Count;
        var blockTokens = (int)Math.Pow(block, rank);
        return Build(device, mask, mask.QueryTokens!.Value, mask.QueryTokens!.Value, blockTokens, blockTokens);
    }

    /// <summary>
    /// HaloNet (see <see cref="HaloNet(AxisValues, int, int, AttentionDevice?)"/>) for tokens in plain row-major order, cut into
    /// query and key blocks of the given sizes (blocks then span rows of the grid, so more of them are partial).
    /// </summary>
    /// <param name="extents">The grid (1 to 3 axes).</param>
    /// <param name="block">Block size b per axis.</param>
    /// <param name="halo">Halo h.</param>
    /// <param name="queryBlockSize">Bq.</param>
    /// <param name="keyBlockSize">Bk.</param>
    /// <param name="device">Build the lists on this accelerator (<see cref="BlockMask.CreateOnDevice"/>); null (the default) builds them on the host.</param>
    /// <returns>The mask.</returns>
    /// <exception cref="ArgumentException">A size is out of range.</exception>
    public static BlockMask HaloNet(
        AxisValues extents, int block, int halo, int queryBlockSize, int keyBlockSize, AttentionDevice? device = null)
    {
        var mask = ElementMask.GridWindow(extents, block, halo, halo);
        return Build(device, mask, mask.QueryTokens!.Value, mask.QueryTokens!.Value, queryBlockSize, keyBlockSize);
    }

    /// <summary>
    /// Segment-id (region) self-attention on a flattened 1–3D token grid: tokens attend only within their
    /// own region, as in region-restricted attention (Region Attention Transformer) and the isolation of
    /// subjects in multi-subject generation (IR-Diffusion). A negative id marks a token that takes part in
    /// nothing (output 0, LSE −∞).
    /// </summary>
    /// <param name="segments">Id per token, <c>[batches, N]</c> (the grid flattened in the tensors' order).</param>
    /// <param name="queryBlockSize">Bq.</param>
    /// <param name="keyBlockSize">Bk.</param>
    /// <param name="batches">1 for ids shared by every batch entry, else the batch size.</param>
    /// <param name="device">Build the lists on this accelerator (<see cref="BlockMask.CreateOnDevice"/>); null (the default) builds them on the host.</param>
    /// <returns>The mask: blocks inside one region full, mixed blocks partial, blocks between disjoint regions skipped.</returns>
    /// <exception cref="ArgumentException">A size is below 1 or the length is not a multiple of <paramref name="batches"/>.</exception>
    public static BlockMask Segments(
        ReadOnlySpan<int> segments, int queryBlockSize, int keyBlockSize, int batches = 1, AttentionDevice? device = null)
        => Segments(segments, segments, queryBlockSize, keyBlockSize, batches, device);

    /// <summary>Segment ids for queries and keys separately (cross-attention between two tokenisations of the same regions).</summary>
    /// <param name="querySegments">Query ids, <c>[batches, Nq]</c>.</param>
    /// <param name="keySegments">Key ids, <c>[batches, Nk]</c>.</param>
    /// <param name="queryBlockSize">Bq.</param>
    /// <param name="keyBlockSize">Bk.</param>
    /// <param name="batches">1 for ids shared by every batch entry, else the batch size.</param>
    /// <param name="device">Build the lists on this accelerator (<see cref="BlockMask.CreateOnDevice"/>); null (the default) builds them on the host.</param>
    /// <returns>The mask.</returns>
    /// <exception cref="ArgumentException">A size is below 1 or a length is not a multiple of <paramref name="batches"/>.</exception>
    public static BlockMask Segments(
        ReadOnlySpan<int> querySegments, ReadOnlySpan<int> keySegments, int queryBlockSize, int keyBlockSize, int batches = 1,
        AttentionDevice? device = null)
    {
        var mask = ElementMask.Segments(querySegments, keySegments, batches);
        return Build(device, mask, mask.QueryTokens!.Value, mask.KeyTokens!.Value, queryBlockSize, keyBlockSize);
    }

    /// <summary>
    /// Variable-length (packed) sequences, FlashAttention's <c>varlen</c> API: documents
    /// <c>[cu[i], cu[i + 1])</c> of one packed sequence attend only within themselves (optionally causally).
    /// </summary>
    /// <param name="cumulativeSequenceLengths"><c>cu_seqlens</c>: 0, then the running total of the document lengths (non-decreasing; the last entry is N).</param>
    /// <param name="queryBlockSize">Bq.</param>
    /// <param name="keyBlockSize">Bk.</param>
    /// <param name="causal">Causal within each document.</param>
    /// <param name="device">Build the lists on this accelerator (<see cref="BlockMask.CreateOnDevice"/>); null (the default) builds them on the host.</param>
    /// <returns>The mask over N = cu[^1] tokens.</returns>
    /// <exception cref="ArgumentException">The lengths do not start at 0, decrease, or give no token.</exception>
    public static BlockMask Documents(
        ReadOnlySpan<int> cumulativeSequenceLengths, int queryBlockSize, int keyBlockSize, bool causal = false, AttentionDevice? device = null)
    {
        ProblemValidator.CheckCumulativeLengths(cumulativeSequenceLengths);
        var tokens = cumulativeSequenceLengths[^1];
        var ids = new int[tokens];
        for (var d = 0; d + 1 < cumulativeSequenceLengths.Length; d++)
        {
            ids.AsSpan(cumulativeSequenceLengths[d], cumulativeSequenceLengths[d + 1] - cumulativeSequenceLengths[d]).Fill(d);
        }

        var mask = ElementMask.Segments(ids);
        return Build(device, causal ? mask.And(ElementMask.Causal) : mask, tokens, tokens, queryBlockSize, keyBlockSize);
    }

    /// <summary>
    /// A key padding mask (BERT-style batches of padded sequences): key <c>k</c> of batch entry <c>b</c> is
    /// visible iff <c>keyValid[b, k]</c>. A batch entry with no valid key gives output 0 and LSE −∞.
    /// </summary>
    /// <param name="keyValid">Valid flags, <c>[batches, Nk]</c>.</param>
    /// <param name="queryTokens">Nq.</param>
    /// <param name="queryBlockSize">Bq.</param>
    /// <param name="keyBlockSize">Bk.</param>
    /// <param name="batches">Batch entries (the mask is per batch entry).</param>
    /// <param name="device">Build the lists on this accelerator (<see cref="BlockMask.CreateOnDevice"/>); null (the default) builds them on the host.</param>
    /// <returns>The mask (per batch entry).</returns>
    /// <exception cref="ArgumentException">A size is below 1 or the length is not a multiple of <paramref name="batches"/>.</exception>
    public static BlockMask KeyPadding(
        ReadOnlySpan<bool> keyValid, int queryTokens, int queryBlockSize, int keyBlockSize, int batches, AttentionDevice? device = null)
    {
        ProblemValidator.CheckSegments(Math.Max(1, queryTokens) * batches, keyValid.Length, batches);
        var keys = new int[keyValid.Length];
        for (var i = 0; i < keys.Length; i++)
        {
            keys[i] = keyValid[i] ? 0 : -1;
        }

        var mask = ElementMask.Segments(new int[(long)queryTokens * batches], keys, batches);
        return Build(device, mask, queryTokens, keys.Length / batches, queryBlockSize, keyBlockSize);
    }

    /// <summary>Key padding from valid lengths: batch entry <c>b</c> sees keys <c>0 … keyLengths[b] − 1</c>.</summary>
    /// <param name="keyLengths">Valid keys per batch entry (0 to <paramref name="keyTokens"/>).</param>
    /// <param name="queryTokens">Nq.</param>
    /// <param name="keyTokens">Nk.</param>
    /// <param name="queryBlockSize">Bq.</param>
    /// <param name="keyBlockSize">Bk.</param>
    /// <param name="device">Build the lists on this accelerator (<see cref="BlockMask.CreateOnDevice"/>); null (the default) builds them on the host.</param>
    /// <returns>The mask (per batch entry).</returns>
    /// <exception cref="ArgumentException">A size is below 1 or a length out of range.</exception>
    public static BlockMask KeyPadding(
        ReadOnlySpan<int> keyLengths, int queryTokens, int keyTokens, int queryBlockSize, int keyBlockSize, AttentionDevice? device = null)
    {
        ProblemValidator.CheckKeyLengths(keyLengths, keyTokens);
        var valid = new bool[(long)keyLengths.Length * keyTokens];
        for (var b = 0; b < keyLengths.Length; b++)
        {
            valid.AsSpan(b * keyTokens, keyLengths[b]).Fill(true);
        }

        return KeyPadding(valid, queryTokens, queryBlockSize, keyBlockSize, keyLengths.Length, device);
    }

    /// <summary>
    /// Neighborhood attention (Hassani et al. 2023, "Neighborhood Attention Transformer"; NATTEN) as a
    /// block-sparse pattern on a 1–3D grid of tokens in row-major order, with the exact window rule of
    /// docs/SEMANTICS.md (kernel size, stride, dilation and causal per axis; windows shifted inward at the
    /// borders). The fused NA kernels are faster for plain NA; this form combines NA with what they lack,
    /// such as NATTEN's relative positional bias (<see cref="ScoreBias.RelativePosition"/>) or an extra
    /// element mask.
    /// </summary>
    /// <param name="extents">The grid, 1 to 3 axes (row-major token order).</param>
    /// <param name="options">Kernel size, stride, dilation and causal flags (Scale, Tiles and Backend are ignored).</param>
    /// <param name="queryBlockSize">Bq.</param>
    /// <param name="keyBlockSize">Bk.</param>
    /// <param name="device">Build the lists on this accelerator (<see cref="BlockMask.CreateOnDevice"/>); null (the default) builds them on the host.</param>
    /// <returns>The mask.</returns>
    /// <exception cref="ArgumentException">The options break a rule of docs/SEMANTICS.md for these extents, or a block size is below 1.</exception>
    public static BlockMask Neighborhood(
        AxisValues extents, NeighborhoodAttentionOptions options, int queryBlockSize, int keyBlockSize, AttentionDevice? device = null)
    {
        var problem = ProblemValidator.Validate(new AttentionShape(1, extents, 1, 1), options with { Tiles = null }, ElementType.Float32);
        var p = new Kernels.Common.ProblemParams(1, 1, 1, 1, 1, 0, problem.Spatial, problem.KernelSize, problem.Stride, problem.Dilation, problem.Causal, 1.0);
        var tokens = (int)problem.Tokens;
        return Build(device, new NeighborhoodElementMask(p), tokens, tokens, queryBlockSize, keyBlockSize);
    }

    /// <summary>The block mask of a builder's element mask, on the host or on <paramref name="device"/>.</summary>
    private static BlockMask Build(AttentionDevice? device, ElementMask mask, int queryTokens, int keyTokens, int queryBlockSize, int keyBlockSize)
        => device is null
            ? BlockMask.Create(mask, queryTokens, keyTokens, queryBlockSize, keyBlockSize)
            : BlockMask.CreateOnDevice(device, mask, queryTokens, keyTokens, queryBlockSize, keyBlockSize);
}
