using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime.Cuda;

namespace Natten.Kernels.Cuda;

/// <summary>
/// 16-byte asynchronous copies from global to shared memory (sm_80 <c>cp.async.cg.shared.global</c>) with zero fill, and
/// the group bookkeeping around them: a thread issues copies, closes them into a group with <see cref="Commit"/>, and
/// <see cref="WaitAllButNewest"/> / <see cref="WaitAll"/> block until its own older groups have landed; a
/// <c>Group.Barrier</c> after the wait makes every thread's copies visible to the group. Without <c>cp.async</c>
/// (the CPU accelerator) <see cref="Copy16"/> copies (or zero-fills) the eight elements at once and the group calls do
/// nothing: a synchronous copy is complete before any wait, so the emulation is exact for code that waits and barriers
/// before it reads.
/// </summary>
/// <remarks>
/// PTX ISA (8.x, sm_80+): <c>cp.async.cg.shared.global [dst], [src], cp-size, src-size;</c> with <c>.cg</c> requires
/// cp-size 16; <c>src-size</c> (≤ cp-size) bytes are read and the rest of the 16 are written as zeros, so src-size 0 writes
/// 16 zero bytes and reads nothing. Both addresses must be 16-byte aligned. The view addresses come from
/// <see cref="SharedAddress.Generic(ArrayView{ushort}, int)"/> and are converted with <c>cvta.to.shared</c> /
/// <c>cvta.to.global</c> inside the asm (the route measured on an H100; see docs/ILGPU.md).
/// </remarks>
internal static class AsyncCopy
{
    /// <summary>16-bit elements per copy (16 bytes).</summary>
    public const int Elements = 8;

    /// <summary>
    /// Copies elements <c>source[sourceElement … + 7]</c> to shared <c>destination[destinationElement … + 7]</c>, or writes
    /// eight zeros there when <paramref name="valid"/> is false (then <paramref name="sourceElement"/> is not used and
    /// nothing is read). Both element offsets must be 16-byte aligned addresses (multiples of 8 from aligned views).
    /// Asynchronous on CUDA: the data is there only after <see cref="Commit"/>, a wait covering its group and a barrier.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Copy16(ArrayView<ushort> destination, int destinationElement, ArrayView<ushort> source, long sourceElement, bool valid)
    {
        if (CudaAsm.IsSupported)
        {
            Input<long> to = SharedAddress.Generic(destination, destinationElement);
            Input<long> from = SharedAddress.Generic(source, valid ? sourceElement : 0L);
            Input<uint> bytes = valid ? 16u : 0u;
            CudaAsm.EmitRef(
                "{ .reg .u64 cpas, cpag; cvta.to.shared.u64 cpas, %0; cvta.to.global.u64 cpag, %1; cp.async.cg.shared.global [cpas], [cpag], 16, %2; }",
                ref to, ref from, ref bytes);
            return;
        }

        for (var i = 0; i < Elements; i++)
        {
            destination[destinationElement + i] = valid ? source[sourceElement + i] : (ushort)0;
        }
    }

    /// <summary>Closes this thread's copies issued since the last commit into one group (an empty group is fine).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Commit()
    {
        if (CudaAsm.IsSupported)
        {
            CudaAsm.Emit("cp.async.commit_group;");
        }
    }

    /// <summary>Waits until at most the newest committed group of this thread is still pending (<c>cp.async.wait_group 1</c>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WaitAllButNewest()
    {
        if (CudaAsm.IsSupported)
        {
            CudaAsm.Emit("cp.async.wait_group 1;");
        }
    }

    /// <summary>Waits until every committed group of this thread has landed (<c>cp.async.wait_group 0</c>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WaitAll()
    {
        if (CudaAsm.IsSupported)
        {
            CudaAsm.Emit("cp.async.wait_group 0;");
        }
    }
}
