namespace Natten;

/// <summary>The kinds of ILGPU accelerator the library can run on, in order of preference.</summary>
public enum AcceleratorKind
{
    /// <summary>An NVIDIA GPU through the CUDA driver (PTX JIT-compiled by the driver).</summary>
    Cuda,

    /// <summary>An OpenCL 2.0+ device with generic address space support (not exercised on our machines).</summary>
    OpenCL,

    /// <summary>ILGPU's CPU accelerator: runs kernels as .NET code, one OS thread per group thread. For testing kernels.</summary>
    Cpu,
}
