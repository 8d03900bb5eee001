using System.Collections.Concurrent;
using ILGPU.Runtime;

namespace Natten.Kernels.Runtime;

/// <summary>The driver calls behind <see cref="SharedMemoryOptIn"/> (CUDA: in <see cref="CudaSharedMemory"/>; tests: a fake).</summary>
internal interface ISharedMemoryDriver
{
    /// <summary>Bytes of static shared memory <paramref name="kernel"/> declares (CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES).</summary>
    int StaticSharedBytes(Kernel kernel);

    /// <summary>Raises the dynamic shared memory <paramref name="kernel"/> may be launched with (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES).</summary>
    void SetMaxDynamicSharedBytes(Kernel kernel, int bytes);
}

/// <summary>
/// The per-device half of the shared-memory opt-in: a group may use up to <see cref="DefaultLimit"/> bytes (static and
/// dynamic together) as is; up to <see cref="OptInLimit"/> once the kernel's dynamic limit has been raised, which
/// <see cref="Prepare"/> does the first time a launch needs it: once per kernel (to the most the kernel can take, so
/// later launches need nothing), thread-safe. CUDA: 48 KB without the opt-in; the opt-in limit is the device's
/// CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN (e.g. 227 KB on sm_90, 163 KB on sm_80, 99 KB on sm_86).
/// </summary>
internal sealed class SharedMemoryOptIn(string deviceName, int defaultLimit, int optInLimit, ISharedMemoryDriver driver)
{
    private readonly ConcurrentDictionary<Kernel, KernelEntry> _kernels = new(ReferenceEqualityComparer.Instance);

    /// <summary>Static plus dynamic bytes per group a kernel may use without the opt-in.</summary>
    public int DefaultLimit { get; } = defaultLimit;

    /// <summary>Static plus dynamic bytes per group a kernel may use with the opt-in (at least <see cref="DefaultLimit"/>).</summary>
    public int OptInLimit { get; } = Math.Max(defaultLimit, optInLimit);

    /// <summary>Kernels whose dynamic limit has been raised so far.</summary>
    public int OptedInKernels => _kernels.Values.Count(e => e.OptedIn);

    /// <summary>Whether <paramref name="kernel"/>'s dynamic limit has been raised.</summary>
    public bool IsOptedIn(Kernel kernel) => _kernels.TryGetValue(kernel, out var entry) && entry.OptedIn;

    /// <summary>
    /// Makes <paramref name="kernel"/> launchable with <paramref name="dynamicBytes"/> of dynamic shared memory: nothing when
    /// its static bytes plus those fit <see cref="DefaultLimit"/>, else raises its dynamic limit (first time only).
    /// </summary>
    /// <exception cref="InvalidOperationException">The kernel's static bytes plus <paramref name="dynamicBytes"/> exceed <see cref="OptInLimit"/>.</exception>
    public void Prepare(Kernel kernel, long dynamicBytes)
    {
        var entry = _kernels.GetOrAdd(kernel, k => new KernelEntry(k));
        var staticBytes = entry.StaticBytes(driver);
        if (staticBytes + dynamicBytes <= DefaultLimit)
        {
            return;
        }

        var allowed = OptInLimit - staticBytes;
        if (dynamicBytes > allowed)
        {
            throw new InvalidOperationException(
                $"{KernelName(kernel)} needs {staticBytes + dynamicBytes} bytes of shared memory ({staticBytes} static + {dynamicBytes} dynamic); "
                + $"{deviceName} allows {OptInLimit} per group with the opt-in ({DefaultLimit} without).");
        }

        entry.OptIn(driver, allowed);
    }

    private static string KernelName(Kernel kernel)
    {
        var method = kernel.CompiledKernel.SourceMethod;
        return $"kernel {method.DeclaringType?.Name}.{method.Name}";
    }

    /// <summary>One kernel: its static bytes (asked once) and whether its dynamic limit is raised.</summary>
    private sealed class KernelEntry(Kernel kernel)
    {
        private readonly Lock _lock = new();
        private int _staticBytes = -1;
        private volatile bool _optedIn;

        public bool OptedIn => _optedIn;

        public int StaticBytes(ISharedMemoryDriver driver)
        {
            var known = Volatile.Read(ref _staticBytes);
            if (known >= 0)
            {
                return known;
            }

            lock (_lock)
            {
                if (_staticBytes < 0)
                {
                    Volatile.Write(ref _staticBytes, driver.StaticSharedBytes(kernel));
                }

                return _staticBytes;
            }
        }

        public void OptIn(ISharedMemoryDriver driver, int bytes)
        {
            if (_optedIn)
            {
                return;
            }

            lock (_lock)
            {
                if (!_optedIn)
                {
                    driver.SetMaxDynamicSharedBytes(kernel, bytes);
                    _optedIn = true;
                }
            }
        }
    }
}
