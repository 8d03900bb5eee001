namespace Natten;

/// <summary>
/// The backends this library can run on, fastest first, and whether each can run a problem.
/// Pick one by name with <see cref="NeighborhoodAttentionOptions.Backend"/>.
/// </summary>
public static class AttentionBackends
{
    /// <summary>Backend names in order of preference (the automatic choice is the first that can run).</summary>
    public static IReadOnlyList<string> Names => BackendRegistry.Default.Backends.Select(b => b.Name).ToArray();

    /// <summary>
    /// Whether backend <paramref name="name"/> also takes tensors already in an accelerator's memory
    /// (<see cref="DeviceTensor{T}"/> overloads of <see cref="NeighborhoodAttention"/>): the ILGPU backends do;
    /// <c>cpu</c> and <c>reference</c> work on host spans only.
    /// </summary>
    /// <exception cref="ArgumentException">Unknown backend name.</exception>
    public static bool RunsOnDeviceTensors(string name) => Get(name) is IDeviceAttentionBackend;

    /// <summary>A one-line description of backend <paramref name="name"/>, naming the accelerator an ILGPU backend runs on.</summary>
    /// <exception cref="ArgumentException">Unknown backend name.</exception>
    public static string Describe(string name)
    {
        var backend = Get(name);
        if (backend is not IDeviceAttentionBackend)
        {
            return backend.Description;
        }

        try
        {
            return $"{backend.Description} [on {Natten.Kernels.Runtime.DeviceRuntime.Default}]";
        }
        catch (InvalidOperationException ex)
        {
            return $"{backend.Description} [{ex.Message}]";
        }
    }

    /// <summary>
    /// Peak device memory in bytes that one host-span call of backend <paramref name="name"/> allocates
    /// on its accelerator (tensors plus workspace), or null for a backend that runs in host memory.
    /// </summary>
    /// <exception cref="ArgumentException">Unknown backend name, or the shape/options are invalid.</exception>
    public static long? DeviceMemoryBytes(
        string name, AttentionShape shape, NeighborhoodAttentionOptions options, ElementType elementType, bool backward)
    {
        var backend = Get(name);
        var problem = ProblemValidator.Validate(shape, options, elementType);
        return backend.DeviceMemoryBytes(problem, backward ? AttentionPass.Backward : AttentionPass.Forward);
    }

    /// <summary>
    /// Whether backend <paramref name="name"/> can run the forward (or backward) pass of a problem;
    /// when not, <paramref name="reason"/> says why.
    /// </summary>
    /// <exception cref="ArgumentException">Unknown backend name, or the shape/options are invalid.</exception>
    public static bool CanRun(
        string name, AttentionShape shape, NeighborhoodAttentionOptions options, ElementType elementType,
        bool backward, out string reason)
    {
        var backend = Get(name);
        var problem = ProblemValidator.Validate(shape, options, elementType);
        return backend.CanRun(problem, backward ? AttentionPass.Backward : AttentionPass.Forward, out reason);
    }

    /// <summary>The backend a call with these arguments would use.</summary>
    /// <exception cref="ArgumentException">The shape/options are invalid or name an unknown backend.</exception>
    /// <exception cref="NotSupportedException">No backend can run the problem; the message lists each reason.</exception>
    public static string Select(AttentionShape shape, NeighborhoodAttentionOptions options, ElementType elementType, bool backward = false)
    {
        var problem = ProblemValidator.Validate(shape, options, elementType);
        return BackendRegistry.Default.Choose(problem, options.Backend, backward ? AttentionPass.Backward : AttentionPass.Forward).Name;
    }

    private static IAttentionBackend Get(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var backend = BackendRegistry.Default.Find(name);
        if (backend is null)
        {
            ThrowHelper.ThrowArgument(nameof(name), $"'{name}' is not a known backend; known: {string.Join(", ", Names)}.");
        }

        return backend;
    }
}
