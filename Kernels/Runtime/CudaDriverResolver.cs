using System.Reflection;
using System.Runtime.InteropServices;

namespace Natten.Kernels.Runtime;

/// <summary>
/// ILGPU imports the CUDA driver as "cuda", which Linux resolves to libcuda.so only. Many images
/// ship just libcuda.so.1 (the runtime soname), and ILGPU then silently reports no CUDA device.
/// This resolver tries both names; it is registered once, before the first context is created.
/// <see cref="TryLoadDriver"/> loads the same library for the driver calls ILGPU does not bind
/// (<see cref="CudaSharedMemory"/>).
/// </summary>
internal static class CudaDriverResolver
{
    private static int _registered;

    /// <summary>File names of the CUDA driver library on this OS, most specific first.</summary>
    private static string[] Candidates
        => OperatingSystem.IsWindows() ? ["nvcuda.dll"]
            : OperatingSystem.IsLinux() ? ["libcuda.so", "libcuda.so.1"]
            : [];

    public static void Register()
    {
        if (!OperatingSystem.IsLinux() || Interlocked.Exchange(ref _registered, 1) == 1)
        {
            return;
        }

        try
        {
            NativeLibrary.SetDllImportResolver(typeof(ILGPU.Context).Assembly, Resolve);
        }
        catch (InvalidOperationException)
        {
            // ILGPU registered its own resolver (it does on WSL); keep it.
        }
    }

    /// <summary>Loads the CUDA driver library (the names the resolver tries); false where there is none.</summary>
    public static bool TryLoadDriver(out IntPtr handle)
    {
        foreach (var candidate in Candidates)
        {
            if (NativeLibrary.TryLoad(candidate, out handle))
            {
                return true;
            }
        }

        handle = IntPtr.Zero;
        return false;
    }

    private static IntPtr Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (libraryName is not ("cuda" or "libcuda" or "libcuda.so"))
        {
            return IntPtr.Zero;
        }

        foreach (var candidate in Candidates)
        {
            if (NativeLibrary.TryLoad(candidate, assembly, searchPath, out var handle))
            {
                return handle;
            }
        }

        return IntPtr.Zero;
    }
}
