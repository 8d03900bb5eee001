namespace Natten;

/// <summary>Validation specific to device tensors: one device for all, not disposed, no destination that is also another tensor.</summary>
internal static class DeviceTensorChecks
{
    /// <summary>The device every given tensor lives on.</summary>
    /// <exception cref="ArgumentException">Tensors on different devices.</exception>
    /// <exception cref="ObjectDisposedException">A tensor was disposed.</exception>
    public static AttentionDevice SameDevice(params (IDeviceTensor? Tensor, string Name)[] tensors)
    {
        AttentionDevice? device = null;
        string? first = null;
        foreach (var (tensor, name) in tensors)
        {
            if (tensor is null)
            {
                continue;
            }

            if (tensor.IsDisposed)
            {
                throw new ObjectDisposedException(name, $"{name} was disposed.");
            }

            if (device is null)
            {
                (device, first) = (tensor.Device, name);
            }
            else if (!ReferenceEquals(device, tensor.Device))
            {
                ThrowHelper.ThrowArgument(name, $"{name} is on {tensor.Device} but {first} is on {device}; all tensors of a call must share one device.");
            }
        }

        return device!;
    }

    /// <summary>No destination may be an input or another destination (device buffers alias only when they are the same tensor).</summary>
    public static void DistinctDestinations((IDeviceTensor? Tensor, string Name)[] inputs, (IDeviceTensor? Tensor, string Name)[] destinations)
    {
        var seen = inputs.Where(t => t.Tensor is not null).ToList();
        foreach (var destination in destinations.Where(t => t.Tensor is not null))
        {
            foreach (var other in seen)
            {
                if (ReferenceEquals(destination.Tensor, other.Tensor))
                {
                    ThrowHelper.ThrowOverlap(destination.Name, other.Name);
                }
            }

            seen.Add(destination);
        }
    }
}

/// <summary>What validation needs of a device tensor of any element type.</summary>
internal interface IDeviceTensor
{
    AttentionDevice Device { get; }

    bool IsDisposed { get; }
}
