using Natten.Kernels.Runtime;

namespace Natten.Backends;

/// <summary>
/// The backends in order of preference, and the one place that picks one for a problem.
/// </summary>
internal sealed class BackendRegistry
{
    private readonly IAttentionBackend[] _backends;

    public BackendRegistry(IEnumerable<IAttentionBackend> backends) => _backends = backends.ToArray();

    /// <summary>
    /// The library's backends. <see cref="Backends"/> orders them by <see cref="IAttentionBackend.Preference"/>:
    /// ILGPU backends first on a GPU, the CPU backend first without one; the reference is the last resort.
    /// </summary>
    public static BackendRegistry Default { get; } = new([new FusedBackend(), new NaiveBackend(), new CpuBackend(), new ReferenceBackend()]);

    /// <summary>The backends in order of preference (a stable sort: equal ranks keep registration order).</summary>
    public IReadOnlyList<IAttentionBackend> Backends => _backends.OrderBy(b => b.Preference).ToArray();

    /// <summary>The backend called <paramref name="name"/>, or <c>null</c>.</summary>
    public IAttentionBackend? Find(string name)
        => Array.Find(_backends, b => string.Equals(b.Name, name, StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// The named backend (which must be able to run the problem), or the first one that can.
    /// </summary>
    /// <exception cref="ArgumentException">The name is not a known backend.</exception>
    /// <exception cref="NotSupportedException">The backend (or, when choosing, every backend) cannot run the problem; lists the reasons.</exception>
    public IAttentionBackend Choose(AttentionProblem problem, string? name, AttentionPass pass)
        => Choose(problem, name, pass, device: null);

    /// <summary>
    /// As <see cref="Choose(AttentionProblem, string?, AttentionPass)"/>, for tensors in <paramref name="device"/>'s memory
    /// when it is given: only backends that run on device tensors qualify.
    /// </summary>
    public IAttentionBackend Choose(AttentionProblem problem, string? name, AttentionPass pass, ComputeDevice? device)
    {
        bool CanRun(IAttentionBackend backend, out string reason)
        {
            if (device is null)
            {
                return backend.CanRun(problem, pass, out reason);
            }

            if (backend is not IDeviceAttentionBackend onDevice)
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
                ThrowHelper.ThrowOptions(
                    $"options.Backend '{name}' is not a known backend; known: {string.Join(", ", Backends.Select(b => b.Name))}.");
            }

            if (!CanRun(backend, out var reason))
            {
                ThrowHelper.ThrowBackendCannotRun(backend.Name, reason);
            }

            return backend;
        }

        var reasons = new List<string>();
        foreach (var backend in Backends)
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
