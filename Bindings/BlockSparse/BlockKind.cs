namespace Natten;

/// <summary>How a listed block of a <see cref="BlockMask"/> is evaluated.</summary>
public enum BlockKind
{
    /// <summary>Every (query, key) pair of the block is allowed: no per-element mask is evaluated.</summary>
    Full,

    /// <summary>The block's pairs are filtered by the mask's <see cref="ElementMask"/>.</summary>
    Partial,
}

/// <summary>One listed block: its index along the other sequence and its kind.</summary>
/// <param name="Index">Key block index (in a query block's list) or query block index (in a key block's list).</param>
/// <param name="Kind">Full or partial.</param>
public readonly record struct MaskBlock(int Index, BlockKind Kind);
