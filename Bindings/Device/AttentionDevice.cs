using ILGPU.Runtime;
using Natten.Kernels.Runtime;

namespace Natten;

/// <summary>
/// An ILGPU accelerator the kernels run on: CUDA, then OpenCL, then ILGPU's CPU accelerator, or the
/// kind named by the NATTEN_ACCELERATOR environment variable (cuda | opencl | cpu). Devices are
/// created once per process and shared; kernels are compiled once per device and cached.
/// </summary>
public sealed class AttentionDevice
{
    private static readonly Dictionary<ComputeDevice, AttentionDevice> Wrappers = [];
    private static readonly Lock WrappersLock = new();

    private AttentionDevice(ComputeDevice compute) => Compute = compute;

    /// <summary>The preferred available device (or the one NATTEN_ACCELERATOR names).</summary>
    /// <exception cref="InvalidOperationException">NATTEN_ACCELERATOR names an unknown or unavailable kind.</exception>
    public static AttentionDevice Default => Wrap(DeviceRuntime.Default);

    /// <summary>Kinds with a usable device on this machine, in order of preference.</summary>
    public static IReadOnlyList<AcceleratorKind> Available => DeviceRuntime.Available;

    /// <summary>The kind of accelerator.</summary>
    public AcceleratorKind Kind => Compute.Kind;

    /// <summary>The device's name as the driver reports it.</summary>
    public string Name => Compute.Name;

    /// <summary>The underlying ILGPU accelerator, for interop with other ILGPU code.</summary>
    public Accelerator Accelerator => Compute.Accelerator;

    internal ComputeDevice Compute { get; }

    /// <summary>Whether a device of <paramref name="kind"/> exists here.</summary>
    public static bool IsAvailable(AcceleratorKind kind) => DeviceRuntime.IsAvailable(kind);

    /// <summary>The shared device of <paramref name="kind"/>.</summary>
    /// <exception cref="InvalidOperationException">No device of that kind is available.</exception>
    public static AttentionDevice Get(AcceleratorKind kind) => Wrap(DeviceRuntime.Get(kind));

    /// <summary>A zero-initialised tensor of <paramref name="shape"/> (its product is the length) on this device.</summary>
    /// <exception cref="ArgumentException">An extent is not positive, or there are no extents.</exception>
    public DeviceTensor<T> Allocate<T>(params int[] shape)
        where T : unmanaged
    {
        var tensor = new DeviceTensor<T>(this, shape);
        tensor.Clear();
        return tensor;
    }

    /// <summary>Copies <paramref name="data"/> to a new tensor of <paramref name="shape"/> on this device.</summary>
    /// <exception cref="ArgumentException">The shape's product differs from the data's length.</exception>
    public DeviceTensor<T> Upload<T>(ReadOnlySpan<T> data, params int[] shape)
        where T : unmanaged
    {
        var tensor = new DeviceTensor<T>(this, shape);
        try
        {
            tensor.CopyFrom(data);
        }
        catch
        {
            tensor.Dispose();
            throw;
        }

        return tensor;
    }

    /// <summary>Waits for all work queued on this device.</summary>
    public void Synchronize() => Accelerator.Synchronize();

    /// <summary><c>Cpu: CPUAccelerator</c>, <c>Cuda: NVIDIA H100 …</c>.</summary>
    public override string ToString() => Compute.ToString();

    private static AttentionDevice Wrap(ComputeDevice compute)
    {
        lock (WrappersLock)
        {
            if (!Wrappers.TryGetValue(compute, out var wrapper))
            {
                wrapper = new AttentionDevice(compute);
                Wrappers[compute] = wrapper;
            }

            return wrapper;
        }
    }
}
