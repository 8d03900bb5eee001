using System.Runtime.CompilerServices;

namespace Natten.Kernels.Cpu;

/// <summary>Half storage at the edges of the float32 kernels: whole tensors converted in parallel chunks.</summary>
internal static unsafe class HalfConversion
{
    private const int Chunk = 1 << 16;

    /// <summary>A pinned float32 copy of <paramref name="source"/>.</summary>
    public static PinnedBuffer ToSingle(ReadOnlySpan<Half> source, CpuOptions options)
    {
        var buffer = PinnedBuffer.Rent(source.Length);
        fixed (Half* s = source)
        {
            var from = s;
            var to = buffer.Pointer;
            var length = source.Length;
            Parallel.For(0, (length + Chunk - 1) / Chunk, options.Parallel, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (chunk) =>
            {
                var end = Math.Min(length, (chunk + 1) * Chunk);
                for (var i = chunk * Chunk; i < end; i++)
                {
                    to[i] = (float)from[i];
                }
            });
        }

        return buffer;
    }

    /// <summary>Rounds the first <c>destination.Length</c> floats of <paramref name="source"/> to Half.</summary>
    public static void ToHalf(PinnedBuffer source, Span<Half> destination, CpuOptions options)
    {
        fixed (Half* d = destination)
        {
            var from = source.Pointer;
            var to = d;
            var length = destination.Length;
            Parallel.For(0, (length + Chunk - 1) / Chunk, options.Parallel, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (chunk) =>
            {
                var end = Math.Min(length, (chunk + 1) * Chunk);
                for (var i = chunk * Chunk; i < end; i++)
                {
                    to[i] = (Half)from[i];
                }
            });
        }
    }
}
