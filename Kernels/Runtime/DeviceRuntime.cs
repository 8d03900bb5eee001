using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;

namespace Natten.Kernels.Runtime;

/// <summary>
/// The one place that creates the ILGPU context and picks accelerators: CUDA, then OpenCL, then the
/// CPU accelerator, unless the NATTEN_ACCELERATOR environment variable (cuda | opencl | cpu) or a
/// caller names one. Devices are created once and shared (thread-safe); they live for the process.
/// </summary>
internal static class DeviceRuntime
{
    /// <summary>Environment variable that overrides the automatic accelerator choice.</summary>
    public const string AcceleratorVariable = "NATTEN_ACCELERATOR";

    /// <summary>
    /// The CPU accelerator's device: 32-wide warps (like CUDA, so warp-level kernels behave alike),
    /// 4 warps per group, one multiprocessor.
    /// </summary>
    public static readonly CPUDevice CpuDevice = new(numThreadsPerWarp: 32, numWarpsPerMultiprocessor: 4, numMultiprocessors: 1);

    private static readonly Lazy<Context> SharedContext = new(CreateContext, LazyThreadSafetyMode.ExecutionAndPublication);
    private static readonly Dictionary<AcceleratorKind, ComputeDevice> Devices = [];
    private static readonly Lock DevicesLock = new();

    /// <summary>The ILGPU context: algorithms on (MathF.Exp and friends compile), O2, fast math off.</summary>
    public static Context Context => SharedContext.Value;

    /// <summary>Accelerator kinds with at least one usable device here, in order of preference.</summary>
    public static IReadOnlyList<AcceleratorKind> Available
        => Enum.GetValues<AcceleratorKind>().Where(k => FindDevice(k) is not null).ToArray();

    /// <summary>The accelerator named by NATTEN_ACCELERATOR, else the most preferred available one.</summary>
    /// <exception cref="InvalidOperationException">NATTEN_ACCELERATOR names an unknown or unavailable kind.</exception>
    public static ComputeDevice Default
    {
        get
        {
            var requested = Environment.GetEnvironmentVariable(AcceleratorVariable);
            if (string.IsNullOrWhiteSpace(requested))
            {
                return Get(Available[0]);
            }

            if (!TryParseKind(requested, out var kind))
            {
                throw new InvalidOperationException($"{AcceleratorVariable}='{requested}' is not one of cuda, opencl, cpu.");
            }

            return Get(kind);
        }
    }

    public static bool TryParseKind(string text, out AcceleratorKind kind)
        => Enum.TryParse(text.Trim(), ignoreCase: true, out kind) && Enum.IsDefined(kind);

    /// <summary>Whether a device of this kind exists here.</summary>
    public static bool IsAvailable(AcceleratorKind kind) => FindDevice(kind) is not null;

    /// <summary>The shared device of this kind (created on first use).</summary>
    /// <exception cref="InvalidOperationException">No device of this kind is available.</exception>
    public static ComputeDevice Get(AcceleratorKind kind)
    {
        lock (DevicesLock)
        {
            if (Devices.TryGetValue(kind, out var existing))
            {
                return existing;
            }

            var device = FindDevice(kind)
                ?? throw new InvalidOperationException($"No {kind} accelerator is available on this machine.");
            var accelerator = device is CPUDevice cpu
                ? cpu.CreateCPUAccelerator(Context, CPUAcceleratorMode.Parallel)
                : device.CreateAccelerator(Context);
            var created = new ComputeDevice(accelerator, kind);
            Devices[kind] = created;
            return created;
        }
    }

    private static Device? FindDevice(AcceleratorKind kind) => kind switch
    {
        AcceleratorKind.Cuda => First(Context.GetCudaDevices()),
        AcceleratorKind.OpenCL => First(Context.GetCLDevices()),
        _ => First(Context.GetCPUDevices()),
    };

    private static Device? First<TDevice>(Context.DeviceCollection<TDevice> devices)
        where TDevice : Device
        => devices.Count > 0 ? devices[0] : null;

    private static Context CreateContext()
    {
        CudaDriverResolver.Register();
        return Context.Create(builder => builder
            .Cuda()
            .OpenCL()
            .CPU(CpuDevice)
            .EnableAlgorithms()
            .Optimize(OptimizationLevel.O2));
    }
}
