using System.Runtime.InteropServices;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Natten.Kernels.Runtime;

/// <summary>
/// The three CUDA driver calls behind more than 48 KB of dynamic shared memory per group, which ILGPU 1.5.3 does not
/// bind: <c>cuDeviceGetAttribute</c> (CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN), <c>cuFuncGetAttribute</c>
/// (CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES: a kernel's static shared memory) and <c>cuFuncSetAttribute</c>
/// (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES). The driver library is the one ILGPU uses, loaded through
/// <see cref="CudaDriverResolver.TryLoadDriver"/>. ILGPU's launch passes the requested dynamic bytes straight to
/// <c>cuLaunchKernel</c> without checking them, so a raised limit is all a larger launch needs.
/// Not run on a GPU in this repository yet.
/// </summary>
internal static unsafe class CudaSharedMemory
{
    /// <summary>CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN.</summary>
    public const int DeviceMaxSharedMemoryPerBlockOptIn = 97;

    /// <summary>CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES.</summary>
    public const int FunctionSharedSizeBytes = 1;

    /// <summary>CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES.</summary>
    public const int FunctionMaxDynamicSharedSizeBytes = 8;

    private static readonly Lazy<Api?> Driver = new(Load, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>
    /// The opt-in for a CUDA accelerator: its default limit is ILGPU's <see cref="Accelerator.MaxSharedMemoryPerGroup"/> (48 KB),
    /// its opt-in limit the device attribute. Null for other accelerators, or when the driver or attribute cannot be read
    /// (then the device keeps the default limit).
    /// </summary>
    public static SharedMemoryOptIn? TryCreateOptIn(Accelerator accelerator)
    {
        if (accelerator is not CudaAccelerator cuda || Driver.Value is not { } api)
        {
            return null;
        }

        int optIn;
        using (cuda.BindScoped())
        {
            if (api.DeviceGetAttribute(&optIn, DeviceMaxSharedMemoryPerBlockOptIn, cuda.DeviceId) != 0)
            {
                return null;
            }
        }

        return new SharedMemoryOptIn(accelerator.Name, accelerator.MaxSharedMemoryPerGroup, optIn, new CudaSharedMemoryDriver(cuda, api));
    }

    private static void Check(int result, string call)
    {
        if (result != 0)
        {
            throw new InvalidOperationException($"{call} failed with CUresult {result}.");
        }
    }

    private static Api? Load()
    {
        if (!CudaDriverResolver.TryLoadDriver(out var library)
            || !NativeLibrary.TryGetExport(library, "cuDeviceGetAttribute", out var deviceGetAttribute)
            || !NativeLibrary.TryGetExport(library, "cuFuncGetAttribute", out var funcGetAttribute)
            || !NativeLibrary.TryGetExport(library, "cuFuncSetAttribute", out var funcSetAttribute))
        {
            return null;
        }

        return new Api(
            (delegate* unmanaged<int*, int, int, int>)deviceGetAttribute,
            (delegate* unmanaged<int*, int, IntPtr, int>)funcGetAttribute,
            (delegate* unmanaged<IntPtr, int, int, int>)funcSetAttribute);
    }

    /// <summary>Entry points: CUresult cuDeviceGetAttribute(int*, attribute, CUdevice), cuFuncGetAttribute(int*, attribute, CUfunction), cuFuncSetAttribute(CUfunction, attribute, int).</summary>
    private sealed class Api(
        delegate* unmanaged<int*, int, int, int> deviceGetAttribute,
        delegate* unmanaged<int*, int, IntPtr, int> funcGetAttribute,
        delegate* unmanaged<IntPtr, int, int, int> funcSetAttribute)
    {
        public int DeviceGetAttribute(int* value, int attribute, int device) => deviceGetAttribute(value, attribute, device);

        public int FuncGetAttribute(int* value, int attribute, IntPtr function) => funcGetAttribute(value, attribute, function);

        public int FuncSetAttribute(IntPtr function, int attribute, int value) => funcSetAttribute(function, attribute, value);
    }

    /// <summary>The CUDA side of <see cref="SharedMemoryOptIn"/>: calls made with the accelerator's context current.</summary>
    private sealed class CudaSharedMemoryDriver(CudaAccelerator accelerator, Api api) : ISharedMemoryDriver
    {
        public int StaticSharedBytes(Kernel kernel)
        {
            int value;
            using (accelerator.BindScoped())
            {
                Check(api.FuncGetAttribute(&value, FunctionSharedSizeBytes, Function(kernel)), "cuFuncGetAttribute(SHARED_SIZE_BYTES)");
            }

            return value;
        }

        public void SetMaxDynamicSharedBytes(Kernel kernel, int bytes)
        {
            using (accelerator.BindScoped())
            {
                Check(
                    api.FuncSetAttribute(Function(kernel), FunctionMaxDynamicSharedSizeBytes, bytes),
                    $"cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES, {bytes}) on {accelerator.Name}");
            }
        }

        private static IntPtr Function(Kernel kernel)
            => kernel is CudaKernel cuda ? cuda.FunctionPtr : throw new InvalidOperationException($"{kernel} is not a CUDA kernel.");
    }
}
