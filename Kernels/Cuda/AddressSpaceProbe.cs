using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using Natten.Kernels.Fused;
using Natten.Kernels.Runtime;

namespace Natten.Kernels.Cuda;

/// <summary>
/// Checks, on a CUDA device, the two assumptions under <c>ldmatrix</c> and <c>cp.async</c> that the PTX itself does not
/// guarantee: that the pointer <see cref="SharedAddress.Generic(ArrayView{ushort}, int)"/> reads out of an ILGPU view is a generic address in the
/// right state space (<c>isspacep.shared</c> for a dynamic shared-memory view, <c>isspacep.global</c> for a buffer view),
/// and that dynamic shared memory starts 16-byte aligned after the generated kernels' static shared memory (ILGPU declares
/// it with <c>.align</c> 4 or 8; the kernels keep their static bytes a multiple of 16). Off CUDA there are no state spaces
/// to check: <see cref="Check"/> returns null.
/// </summary>
internal static class AddressSpaceProbe
{
    /// <summary>Values the probe reports: shared view is shared, buffer view is global, dynamic base offset mod 16, static scratch alive.</summary>
    public const int Values = 4;

    /// <summary>The expected values: 1, 1, 0 (aligned), 1.</summary>
    public static IReadOnlyList<uint> Expected { get; } = [1, 1, 0, 1];

    /// <summary>The reported values on a CUDA device, or null elsewhere.</summary>
    public static uint[]? Check(ComputeDevice device)
    {
        if (device.Kind != AcceleratorKind.Cuda)
        {
            return null;
        }

        var accelerator = device.Accelerator;
        var launch = device.Kernels(a => new ProbeKernels(a)).Launch;
        using var global = accelerator.Allocate1D<ushort>(64);
        using var result = accelerator.Allocate1D<uint>(Values);
        launch(accelerator.DefaultStream, new KernelConfig(new Index1D(1), new Index1D(32), SharedMemoryConfig.RequestDynamic<ushort>(64)), global.View, result.View);
        accelerator.Synchronize();
        return result.GetAsArray1D();
    }

    /// <summary>One warp; lane 0 writes the four values. Static shared memory of the generated kernels' size precedes the dynamic region.</summary>
    public static void Probe(ArrayView<ushort> global, ArrayView<uint> result)
    {
        var scratch = SharedMemory.Allocate<uint>(TensorCore.ScratchWordsPerWarp * FnaTensorCoreKernel.MaxWarps);
        var dynamic = SharedMemory.GetDynamic<ushort>();
        var lane = Group.IdxX;
        scratch[lane] = 1;
        Group.Barrier();
        if (lane != 0 || !CudaAsm.IsSupported)
        {
            return;
        }

        Output<uint> shared = default, inGlobal = default, offset = default;
        Input<long> sharedAddress = SharedAddress.Generic(dynamic, 0);
        Input<long> globalAddress = SharedAddress.Generic(global, 0);
        CudaAsm.EmitRef("{ .reg .pred sp; isspacep.shared sp, %1; selp.u32 %0, 1, 0, sp; }", ref shared, ref sharedAddress);
        CudaAsm.EmitRef("{ .reg .pred gp; isspacep.global gp, %1; selp.u32 %0, 1, 0, gp; }", ref inGlobal, ref globalAddress);
        CudaAsm.EmitRef("{ .reg .u64 so; cvta.to.shared.u64 so, %1; cvt.u32.u64 %0, so; }", ref offset, ref sharedAddress);
        result[0] = shared.Value;
        result[1] = inGlobal.Value;
        result[2] = offset.Value & 15u;
        result[3] = scratch[31];
    }

    private sealed class ProbeKernels(Accelerator accelerator)
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<ushort>, ArrayView<uint>> Launch { get; } =
            accelerator.LoadKernel<ArrayView<ushort>, ArrayView<uint>>(Probe);
    }
}
