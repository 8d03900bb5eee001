
namespace Natten.Kernels.Common;

/// <summary>
/// A validated problem as the kernels see it, always with three spatial axes: a rank-1 or
/// rank-2 problem is padded with leading axes of extent 1 and kernel 1 (whose window is the single
/// position 0), which leaves the row-major token order unchanged. Passed to kernels by value.
/// </summary>
internal readonly struct ProblemParams
{
    public readonly int Batch;
    public readonly int Heads;
    public readonly int KvHeads;
    public readonly int HeadDim;
    public readonly int ValueDim;
    public readonly int AdditionalTokens;
    public readonly int N0, N1, N2;
    public readonly int K0, K1, K2;
    public readonly int S0, S1, S2;
    public readonly int D0, D1, D2;
    public readonly int C0, C1, C2;
    public readonly float Scale;

    /// <summary>Creates the parameters from per-axis arrays of one to three axes.</summary>
    public ProblemParams(
        int batch, int heads, int kvHeads, int headDim, int valueDim, int additionalTokens,
        int[] spatial, int[] kernel, int[] stride, int[] dilation, bool[] causal, double scale)
    {
        Batch = batch;
        Heads = heads;
        KvHeads = kvHeads;
        HeadDim = headDim;
        ValueDim = valueDim;
        AdditionalTokens = additionalTokens;
        var pad = 3 - spatial.Length;
        int At(int[] values, int axis) => axis < pad ? 1 : values[axis - pad];
        int Flag(int axis) => axis >= pad && causal[axis - pad] ? 1 : 0;
        (N0, N1, N2) = (At(spatial, 0), At(spatial, 1), At(spatial, 2));
        (K0, K1, K2) = (At(kernel, 0), At(kernel, 1), At(kernel, 2));
        (S0, S1, S2) = (At(stride, 0), At(stride, 1), At(stride, 2));
        (D0, D1, D2) = (At(dilation, 0), At(dilation, 1), At(dilation, 2));
        (C0, C1, C2) = (Flag(0), Flag(1), Flag(2));
        Scale = (float)scale;
    }

    public long Tokens => (long)N0 * N1 * N2;

    /// <summary>Window slots per query: ∏K (causal windows leave some of them masked).</summary>
    public int WindowSize => K0 * K1 * K2;

    /// <summary>Query rows: B · N · H.</summary>
    public long Rows => Batch * Tokens * Heads;

    public int KvHeadOf(int head) => head / (Heads / KvHeads);

    public long Token(int x0, int x1, int x2) => (((long)x0 * N1) + x1) * N2 + x2;

    public void Coordinates(long token, out int x0, out int x1, out int x2)
    {
        x2 = (int)(token % N2);
        var rest = token / N2;
        x1 = (int)(rest % N1);
        x0 = (int)(rest / N1);
    }

    /// <summary>
    /// The key seen by query (x0, x1, x2) in window slot <paramref name="slot"/> (row-major over the
    /// axes), or -1 when a causal axis truncates that slot away.
    /// </summary>
    public long KeyOfSlot(int x0, int x1, int x2, int slot)
    {
        var w2 = slot % K2;
        var w1 = slot / K2 % K1;
        var w0 = slot / (K1 * K2);
        WindowRule.KeyRange(x0, N0, K0, S0, D0, C0 != 0, out var f0, out var c0);
        WindowRule.KeyRange(x1, N1, K1, S1, D1, C1 != 0, out var f1, out var c1);
        WindowRule.KeyRange(x2, N2, K2, S2, D2, C2 != 0, out var f2, out var c2);
        if (w0 >= c0 || w1 >= c1 || w2 >= c2)
        {
            return -1;
        }

        return Token(f0 + (w0 * D0), f1 + (w1 * D1), f2 + (w2 * D2));
    }

    /// <summary>The window slot in which query (x0, x1, x2) sees key (y0, y1, y2); the caller knows it does.</summary>
    public int SlotOfKey(int x0, int x1, int x2, int y0, int y1, int y2)
    {
        WindowRule.KeyRange(x0, N0, K0, S0, D0, C0 != 0, out var f0, out _);
        WindowRule.KeyRange(x1, N1, K1, S1, D1, C1 != 0, out var f1, out _);
        WindowRule.KeyRange(x2, N2, K2, S2, D2, C2 != 0, out var f2, out _);
        return ((((y0 - f0) / D0 * K1) + ((y1 - f1) / D1)) * K2) + ((y2 - f2) / D2);
    }
}
