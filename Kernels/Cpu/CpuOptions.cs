using System.Runtime.Intrinsics;

namespace Natten.Kernels.Cpu;

/// <summary>Knobs of the CPU kernels; the defaults are what the backend uses (tests and benchmarks vary them).</summary>
internal sealed record CpuOptions
{
    /// <summary>The defaults: widest accelerated vectors, every core, automatic tiles.</summary>
    public static CpuOptions Default { get; } = new();

    /// <summary>Vector width in bits (512, 256 or 128); 0 picks the widest the hardware accelerates.</summary>
    public int VectorBits { get; init; }

    /// <summary>Worker threads at most; -1 for the thread pool's choice. Results do not depend on it.</summary>
    public int MaxThreads { get; init; } = -1;

    /// <summary>Rows per tile on each of the three (padded) axes, or null for the automatic choice.</summary>
    public int[]? TileExtent { get; init; }

    /// <summary>The width these options resolve to on this machine.</summary>
    public int ResolvedVectorBits => VectorBits switch
    {
        512 or 256 or 128 => VectorBits,
        _ when Vector512.IsHardwareAccelerated => 512,
        _ when Vector256.IsHardwareAccelerated => 256,
        _ => 128,
    };

    internal ParallelOptions Parallel => new() { MaxDegreeOfParallelism = MaxThreads };
}
