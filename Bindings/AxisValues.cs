using System.Globalization;

namespace Natten;

/// <summary>
/// One integer per spatial axis (up to three), or one integer for every axis.
/// <c>7</c> converts to "7 on every axis"; <c>(7, 5)</c> to "7 on axis 0, 5 on axis 1".
/// As a spatial shape (<see cref="AttentionShape.Spatial"/>) the number of values is the rank.
/// </summary>
public readonly struct AxisValues : IEquatable<AxisValues>
{
    /// <summary>The largest supported number of spatial axes.</summary>
    public const int MaxRank = 3;

    private readonly int _x;
    private readonly int _y;
    private readonly int _z;

    // 0: not given; -1: one value for every axis; 1..3: that many per-axis values.
    private readonly sbyte _count;

    /// <summary>One value for every axis.</summary>
    public AxisValues(int value)
    {
        _x = _y = _z = value;
        _count = -1;
    }

    /// <summary>Two per-axis values.</summary>
    public AxisValues(int axis0, int axis1)
    {
        (_x, _y, _z) = (axis0, axis1, 0);
        _count = 2;
    }

    /// <summary>Three per-axis values.</summary>
    public AxisValues(int axis0, int axis1, int axis2)
    {
        (_x, _y, _z) = (axis0, axis1, axis2);
        _count = 3;
    }

    private AxisValues(int x, int y, int z, sbyte count)
    {
        (_x, _y, _z, _count) = (x, y, z, count);
    }

    /// <summary>Whether any value was given (a <c>default</c> instance has none).</summary>
    public bool IsSpecified => _count != 0;

    /// <summary>Whether one value stands for every axis.</summary>
    public bool IsUniform => _count == -1;

    /// <summary>Number of values given: 1 for a uniform value, 0 when unspecified.</summary>
    public int Count => _count < 0 ? 1 : _count;

    /// <summary>The value on <paramref name="axis"/> (a uniform value answers for every axis).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The axis is negative or beyond <see cref="Count"/>.</exception>
    public int this[int axis]
    {
        get
        {
            if (IsUniform && axis is >= 0 and < MaxRank)
            {
                return _x;
            }

            return axis switch
            {
                0 when _count >= 1 => _x,
                1 when _count >= 2 => _y,
                2 when _count >= 3 => _z,
                _ => throw new ArgumentOutOfRangeException(nameof(axis), axis, $"Axis {axis} is not one of the {Count} given."),
            };
        }
    }

    /// <summary>Explicit per-axis values (1 to 3 of them).</summary>
    /// <exception cref="ArgumentException">Zero or more than three values.</exception>
    public static AxisValues PerAxis(ReadOnlySpan<int> values) => values.Length switch
    {
        1 => new AxisValues(values[0], 0, 0, 1),
        2 => new AxisValues(values[0], values[1]),
        3 => new AxisValues(values[0], values[1], values[2]),
        _ => throw new ArgumentException($"Expected 1 to {MaxRank} per-axis values, got {values.Length}.", nameof(values)),
    };

    /// <summary>Parses <c>"7"</c> (every axis) or <c>"7x5"</c> / <c>"3x4x5"</c> (per axis).</summary>
    /// <exception cref="FormatException">The text is not one to three <c>x</c>-separated integers.</exception>
    public static AxisValues Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var parts = text.Split('x', 'X');
        if (parts.Length > MaxRank)
        {
            throw new FormatException($"'{text}' has {parts.Length} values; at most {MaxRank} axes are supported.");
        }

        var values = new int[parts.Length];
        for (var i = 0; i < parts.Length; i++)
        {
            if (!int.TryParse(parts[i], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out values[i]))
            {
                throw new FormatException($"'{text}' is not a list of integers separated by 'x' (e.g. 7 or 7x7).");
            }
        }

        return values.Length == 1 ? new AxisValues(values[0]) : PerAxis(values);
    }

    /// <summary>The values for a problem of <paramref name="rank"/> axes, or <c>null</c> when the count does not fit.</summary>
    internal int[]? Resolve(int rank)
    {
        if (IsUniform)
        {
            return Enumerable.Repeat(_x, rank).ToArray();
        }

        var self = this;
        return Count == rank ? Enumerable.Range(0, rank).Select(a => self[a]).ToArray() : null;
    }

    /// <summary>One value for every axis.</summary>
    public static implicit operator AxisValues(int value) => new(value);

    /// <summary>Two per-axis values.</summary>
    public static implicit operator AxisValues((int Axis0, int Axis1) values) => new(values.Axis0, values.Axis1);

    /// <summary>Three per-axis values.</summary>
    public static implicit operator AxisValues((int Axis0, int Axis1, int Axis2) values) => new(values.Axis0, values.Axis1, values.Axis2);

    /// <inheritdoc/>
    public bool Equals(AxisValues other) => _count == other._count && _x == other._x && _y == other._y && _z == other._z;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is AxisValues other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(_x, _y, _z, _count);

    /// <summary>Equality.</summary>
    public static bool operator ==(AxisValues left, AxisValues right) => left.Equals(right);

    /// <summary>Inequality.</summary>
    public static bool operator !=(AxisValues left, AxisValues right) => !left.Equals(right);

    /// <summary><c>7</c>, <c>7x5</c> or <c>(unspecified)</c>.</summary>
    public override string ToString()
    {
        var self = this;
        return _count == 0
            ? "(unspecified)"
            : string.Join('x', Enumerable.Range(0, Count).Select(a => self[a].ToString(CultureInfo.InvariantCulture)));
    }
}
