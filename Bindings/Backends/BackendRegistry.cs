namespace Natten.Backends;

/// <summary>
/// The backends in order of preference, and the one place that picks one for a problem.
/// </summary>
internal sealed class BackendRegistry
{
    private readonly IAttentionBackend[] _backends;

    public BackendRegistry(IEnumerable<IAttentionBackend> backends) => _backends = backends.ToArray();

    /// <summary>The library's backends, fastest first; the reference is the last resort.</summary>
    public static BackendRegistry Default { get; } = new([new NaiveBackend(), new ReferenceBackend()]);

    public IReadOnlyList<IAttentionBackend> Backends => _backends;

    /// <summary>The backend called <paramref name="name"/>, or <c>null</c>.</summary>
    public IAttentionBackend? Find(string name)
        => Array.Find(_backends, b => string.Equals(b.Name, name, StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// The named backend (which must be able to run the problem), or the first one that can.
    /// </summary>
    /// <exception cref="ArgumentException">The name is not a known backend.</exception>
    /// <exception cref="NotSupportedException">The backend (or, when choosing, every backend) cannot run the problem; lists the reasons.</exception>
    public IAttentionBackend Choose(AttentionProblem problem, string? name, AttentionPass pass)
    {
        if (name is not null)
        {
            var backend = Find(name);
            if (backend is null)
            {
                ThrowHelper.ThrowOptions(
                    $"options.Backend '{name}' is not a known backend; known: {string.Join(", ", _backends.Select(b => b.Name))}.");
            }

            if (!backend.CanRun(problem, pass, out var reason))
            {
                ThrowHelper.ThrowBackendCannotRun(backend.Name, reason);
            }

            return backend;
        }

        var reasons = new List<string>();
        foreach (var backend in _backends)
        {
            if (backend.CanRun(problem, pass, out var reason))
            {
                return backend;
            }

            reasons.Add($"{backend.Name}: {reason}");
        }

        ThrowHelper.ThrowNoBackend(reasons);
        return null;
    }
}
