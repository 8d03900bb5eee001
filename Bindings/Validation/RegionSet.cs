using System.Diagnostics.CodeAnalysis;

namespace Natten.Validation;

/// <summary>
/// The memory regions of one call's tensors, for overlap checks. Spans cannot live in arrays, so
/// this ref struct holds a fixed number of them; each destination added is checked against every
/// region added before it, then becomes one itself.
/// </summary>
internal ref struct RegionSet
{
    private const int Capacity = 16;

    private ReadOnlySpan<byte> _r0, _r1, _r2, _r3, _r4, _r5, _r6, _r7, _r8, _r9, _r10, _r11, _r12, _r13, _r14, _r15;
    private readonly string[] _names;
    private int _count;

    public RegionSet() => _names = new string[Capacity];

    /// <summary>Adds an input region.</summary>
    public void Add(ReadOnlySpan<byte> region, string name)
    {
        if (_count == Capacity)
        {
            throw new InvalidOperationException("RegionSet is full.");
        }

        Slot(_count) = region;
        _names[_count++] = name;
    }

    /// <summary>
    /// Checks a destination against every region so far, then adds it. A destination may alias an
    /// input named in <paramref name="allowExactAlias"/> exactly (same start), never partially.
    /// </summary>
    public void AddDestination(ReadOnlySpan<byte> region, string name, string[]? allowExactAlias = null)
    {
        for (var i = 0; i < _count; i++)
        {
            var other = Slot(i);
            if (!region.Overlaps(other, out var offset))
            {
                continue;
            }

            if (offset != 0 || allowExactAlias is null || !allowExactAlias.Contains(_names[i]))
            {
                ThrowHelper.ThrowOverlap(name, _names[i]);
            }
        }

        Add(region, name);
    }

    [UnscopedRef]
    private ref ReadOnlySpan<byte> Slot(int i)
    {
        switch (i)
        {
            case 0: return ref _r0;
            case 1: return ref _r1;
            case 2: return ref _r2;
            case 3: return ref _r3;
            case 4: return ref _r4;
            case 5: return ref _r5;
            case 6: return ref _r6;
            case 7: return ref _r7;
            case 8: return ref _r8;
            case 9: return ref _r9;
            case 10: return ref _r10;
            case 11: return ref _r11;
            case 12: return ref _r12;
            case 13: return ref _r13;
            case 14: return ref _r14;
            default: return ref _r15;
        }
    }
}
