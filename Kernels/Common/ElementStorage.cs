namespace Natten.Kernels.Common;

/// <summary>
/// How a storage element converts to and from the float32 the kernels compute in. A kernel is
/// generic over (T, TStorage) and ILGPU compiles one variant per pair: no branches on the type.
/// </summary>
internal interface IElementStorage<T>
    where T : unmanaged
{
    static abstract float Load(T value);

    static abstract T Store(float value);
}

/// <summary>float32 storage.</summary>
internal readonly struct Float32Storage : IElementStorage<float>
{
    public static float Load(float value) => value;

    public static float Store(float value) => value;
}

/// <summary>IEEE binary16 storage (ILGPU's Half has System.Half's bit layout; host spans are reinterpreted).</summary>
internal readonly struct Float16Storage : IElementStorage<ILGPU.Half>
{
    public static float Load(ILGPU.Half value) => (float)value;

    public static ILGPU.Half Store(float value) => (ILGPU.Half)value;
}

/// <summary>IEEE binary16 carried as raw bits (the tensor-core kernels' view of half tensors).</summary>
internal readonly struct Float16BitsStorage : IElementStorage<ushort>
{
    public static float Load(ushort value) => Cuda.Fp16Format.ToFloat(value);

    public static ushort Store(float value) => Cuda.Fp16Format.FromFloat(value);
}

/// <summary>bfloat16 carried as raw bits (no ILGPU type exists for it).</summary>
internal readonly struct BFloat16Storage : IElementStorage<ushort>
{
    public static float Load(ushort value) => Cuda.Bf16Format.ToFloat(value);

    public static ushort Store(float value) => Cuda.Bf16Format.FromFloat(value);
}
