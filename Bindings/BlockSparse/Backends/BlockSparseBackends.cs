using Natten.Kernels.Runtime;

namespace Natten.BlockSparse;

/// <summary>The block-sparse backends in order of preference, and the one place that picks one for a problem.</summary>
internal static class BlockSparseBackends
{
    /// <summary>The fused ILGPU kernels first, then the unfused ILGPU baseline; the double-precision reference (the oracle) last.</summary>
    public static IReadOnlyList<IBlockSparseBackend> All { get; } = [new FusedBlockSparseBackend(), new NaiveBlockSparseBackend(), new ReferenceBlockSparseBackend()];

    public static IBlockSparseBackend? Find(string name)
        => All.FirstOrDefault(b => string.Equals(b.Name, name, StringComparison.OrdinalIgnoreCase));

    /// <summary>The named backend (which must be able to run the problem), or the first that can; on a device only device backends qualify.</summary>
    /// <exception cref="ArgumentException">Unknown backend name.</exception>
    /// <exception cref="NotSupportedException">The backend (or every backend) cannot run the problem; lists the reasons.</exception>
    public static IBlockSparseBackend Choose(BlockSparseProblem problem, string? name, AttentionPass pass, ComputeDevice? device = null)
    {
        bool CanRun(IBlockSparseBackend backend, out string reason)
        {
            if (device is null)
            {
                return backend.CanRun(problem, pass, out reason);
            }

            if (backend is not IDeviceBlockSparseBackend onDevice)
            {
                reason = "it runs on host memory only (pass spans, not device tensors)";
                return false;
            }

            return onDevice.CanRunOn(device, problem, pass, out reason);
        }

        if (name is not null)
        {
            var backend = Find(name);
            if (backend is null)
            {
                ThrowHelper.ThrowOptions($"options.Backend '{name}' is not a block-sparse backend; known: {string.Join(", ", All.Select(b => b.Name))}.");
            }

            if (!CanRun(backend, out var reason))
            {
                ThrowHelper.ThrowBackendCannotRun(backend.Name, reason);
            }

            return backend;
        }

        var reasons = new List<string>();
        foreach (var backend in All)
        {
            if (CanRun(backend, out var reason))
            {
                return backend;
            }

            reasons.Add($"{backend.Name}: {reason}");
        }

        ThrowHelper.ThrowNoBackend(reasons);
        return null;
    }
}
