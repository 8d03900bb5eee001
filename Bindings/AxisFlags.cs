namespace Natten;

/// <summary>
/// One flag per spatial axis (up to three), or one flag for every axis: <c>true</c> converts to
/// "every axis", <c>(false, true)</c> to per-axis flags.
/// </summary>
public readonly struct AxisFlags : IEquatable<AxisFlags>
{
    private readonly AxisValues _values;

    private AxisFlags(AxisValues values) => _values = values;

    /// <summary>One flag for every axis.</summary>
    public AxisFlags(bool value) => _values = new AxisValues(value ? 1 : 0);

    /// <summary>Two per-axis flags.</summary>
    public AxisFlags(bool axis0, bool axis1) => _values = new AxisValues(axis0 ? 1 : 0, axis1 ? 1 : 0);

    /// <summary>Three per-axis flags.</summary>
    public AxisFlags(bool axis0, bool axis1, bool axis2) => _values = new AxisValues(axis0 ? 1 : 0, axis1 ? 1 : 0, axis2 ? 1 : 0);

    /// <summary>Whether one flag stands for every axis (also true for <c>default</c>: false everywhere).</summary>
    public bool IsUniform => !_values.IsSpecified || _values.IsUniform;

    /// <summary>Number of flags given (1 for a uniform flag).</summary>
    public int Count => _values.IsSpecified ? _values.Count : 1;

    /// <summary>The flag on <paramref name="axis"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The axis is negative or beyond <see cref="Count"/>.</exception>
    public bool this[int axis] => _values.IsSpecified ? _values[axis] != 0 : axis is >= 0 and < AxisValues.MaxRank
        ? false
        : throw new ArgumentOutOfRangeException(nameof(axis), axis, "Axis out of range.");

    /// <summary>Parses <c>"1"</c> (every axis) or per-axis <c>"0x1"</c>; each value 0 or 1 (also true/false).</summary>
    /// <exception cref="FormatException">The text is not one to three <c>x</c>-separated 0/1 values.</exception>
    public static AxisFlags Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var normalized = string.Join('x', text.Split('x', 'X').Select(p => p.Trim().ToUpperInvariant() switch
        {
            "TRUE" => "1",
            "FALSE" => "0",
            var other => other,
        }));
        var values = AxisValues.Parse(normalized);
        for (var a = 0; a < values.Count; a++)
        {
            if (values[a] is not (0 or 1))
            {
                throw new FormatException($"'{text}' must hold 0 or 1 per axis (e.g. 0x1).");
            }
        }

        return new AxisFlags(values);
    }

    /// <summary>The flags for a problem of <paramref name="rank"/> axes, or <c>null</c> when the count does not fit.</summary>
    internal bool[]? Resolve(int rank)
    {
        if (!_values.IsSpecified)
        {
            return new bool[rank];
        }

        return _values.Resolve(rank)?.Select(v => v != 0).ToArray();
    }

    /// <summary>One flag for every axis.</summary>
    public static implicit operator AxisFlags(bool value) => new(value);

    /// <summary>Two per-axis flags.</summary>
    public static implicit operator AxisFlags((bool Axis0, bool Axis1) values) => new(values.Axis0, values.Axis1);

    /// <summary>Three per-axis flags.</summary>
    public static implicit operator AxisFlags((bool Axis0, bool Axis1, bool Axis2) values) => new(values.Axis0, values.Axis1, values.Axis2);

    /// <inheritdoc/>
    public bool Equals(AxisFlags other)
    {
        var self = this;
        return Count == other.Count && IsUniform == other.IsUniform && Enumerable.Range(0, Count).All(a => self[a] == other[a]);
    }

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is AxisFlags other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(IsUniform, Count, this[0], Count > 1 && this[1], Count > 2 && this[2]);

    /// <summary>Equality.</summary>
    public static bool operator ==(AxisFlags left, AxisFlags right) => left.Equals(right);

    /// <summary>Inequality.</summary>
    public static bool operator !=(AxisFlags left, AxisFlags right) => !left.Equals(right);

    /// <summary><c>1</c>, <c>0x1</c>, …</summary>
    public override string ToString()
    {
        var self = this;
        return string.Join('x', Enumerable.Range(0, Count).Select(a => self[a] ? "1" : "0"));
    }
}
