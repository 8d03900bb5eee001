using System.Numerics;

namespace Natten.Backends;

/// <summary>Which pass a backend is asked to run.</summary>
internal enum AttentionPass
{
    Forward,
    Backward,
}

/// <summary>
/// One way of computing neighborhood attention. Backends receive validated problems and spans
/// (see <see cref="ProblemValidator"/>) and only compute; <see cref="CanRun"/> says why not when they can't.
/// </summary>
internal interface IAttentionBackend
{
    /// <summary>Name used in options, the CLI and error messages (lower case).</summary>
    string Name { get; }

    /// <summary>One line on what this backend is.</summary>
    string Description { get; }

    /// <summary>
    /// Rank in the automatic choice, lower first (<see cref="BackendPreference"/>); backends of equal rank
    /// keep their registration order.
    /// </summary>
    int Preference => BackendPreference.Unstated;

    /// <summary>Whether this backend can run <paramref name="problem"/>; otherwise a one-line reason.</summary>
    bool CanRun(AttentionProblem problem, AttentionPass pass, out string reason);

    /// <summary>
    /// Peak device memory in bytes one call allocates on the accelerator (tensors plus workspace), or
    /// null for backends that run in host memory.
    /// </summary>
    long? DeviceMemoryBytes(AttentionProblem problem, AttentionPass pass) => null;

    void Forward<T>(AttentionProblem problem, in ForwardTensors<T> tensors)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>;

    void Backward<T>(AttentionProblem problem, in BackwardTensors<T> tensors)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>;
}
