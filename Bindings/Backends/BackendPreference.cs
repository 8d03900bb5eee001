using Natten.Kernels.Runtime;

namespace Natten.Backends;

/// <summary>
/// The order of the automatic choice (<see cref="IAttentionBackend.Preference"/>, lower first): ILGPU
/// backends on a GPU, then the SIMD CPU backend, then ILGPU backends on ILGPU's CPU accelerator
/// (a vehicle for testing kernels), then the reference.
/// </summary>
internal static class BackendPreference
{
    /// <summary>ILGPU backends whose default accelerator is a GPU (CUDA or OpenCL).</summary>
    public const int Gpu = 100;

    /// <summary>The SIMD, multi-threaded CPU backend.</summary>
    public const int Cpu = 200;

    /// <summary>ILGPU backends on ILGPU's CPU accelerator (or with no usable accelerator).</summary>
    public const int CpuAccelerator = 300;

    /// <summary>Backends that state no preference.</summary>
    public const int Unstated = 500;

    /// <summary>The reference: exact, O(N²), the last resort.</summary>
    public const int LastResort = 1000;

    /// <summary>
    /// Where an ILGPU backend ranks: by the kind of accelerator <see cref="DeviceRuntime.Default"/> would pick
    /// (NATTEN_ACCELERATOR, else the most preferred one found), without creating that accelerator.
    /// </summary>
    public static int OfDeviceBackend()
    {
        try
        {
            var requested = Environment.GetEnvironmentVariable(DeviceRuntime.AcceleratorVariable);
            AcceleratorKind kind;
            if (string.IsNullOrWhiteSpace(requested))
            {
                var available = DeviceRuntime.Available;
                if (available.Count == 0)
                {
                    return CpuAccelerator;
                }

                kind = available[0];
            }
            else if (!DeviceRuntime.TryParseKind(requested, out kind) || !DeviceRuntime.IsAvailable(kind))
            {
                return CpuAccelerator;
            }

            return kind is AcceleratorKind.Cuda or AcceleratorKind.OpenCL ? Gpu : CpuAccelerator;
        }
        catch (InvalidOperationException)
        {
            return CpuAccelerator;
        }
    }
}
