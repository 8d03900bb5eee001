using System.Globalization;

namespace Natten.Cli;

/// <summary>
/// Reads <c>--name value</c>, <c>--name=value</c> and <c>--flag</c> options. Each getter consumes what
/// it recognises, so a command declares its options simply by asking for them; <see cref="ThrowIfUnused"/>
/// then reports anything nobody asked for (unknown options, stray values). Errors are
/// <see cref="CliException"/>s naming the option.
/// </summary>
internal sealed class ArgumentReader
{
    private readonly string[] _args;
    private readonly bool[] _used;

    public ArgumentReader(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        _args = [.. args];
        _used = new bool[_args.Length];
    }

    /// <summary>Whether <c>--help</c> or <c>-h</c> appears anywhere.</summary>
    public bool WantsHelp => _args.Any(a => a is "--help" or "-h");

    /// <summary>Whether the flag <paramref name="name"/> (e.g. <c>--json</c>) is present.</summary>
    public bool GetFlag(string name)
    {
        var index = Find(name, out var inlineValue);
        if (index < 0)
        {
            return false;
        }

        if (inlineValue is not null)
        {
            throw CliException.Usage($"{name} is a flag and takes no value (got '{name}={inlineValue}').");
        }

        _used[index] = true;
        return true;
    }

    /// <summary>The value of <paramref name="name"/>, or <c>null</c> when absent.</summary>
    public string? GetString(string name)
    {
        var index = Find(name, out var inlineValue);
        if (index < 0)
        {
            return null;
        }

        _used[index] = true;
        if (inlineValue is not null)
        {
            return inlineValue.Length > 0 ? inlineValue : throw CliException.Usage($"{name} needs a value.");
        }

        var next = index + 1;
        if (next >= _args.Length || _used[next] || IsOptionName(_args[next]))
        {
            throw CliException.Usage($"{name} needs a value.");
        }

        _used[next] = true;
        return _args[next];
    }

    /// <summary>The value of <paramref name="name"/>; an error when absent.</summary>
    public string RequireString(string name)
        => GetString(name) ?? throw CliException.Usage($"{name} is required.");

    /// <summary>An integer option, at least <paramref name="min"/>.</summary>
    public int GetInt(string name, int defaultValue, int min = int.MinValue)
    {
        var text = GetString(name);
        if (text is null)
        {
            return defaultValue;
        }

        if (!int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value))
        {
            throw CliException.Usage($"{name}: '{text}' is not an integer.");
        }

        return value >= min ? value : throw CliException.Usage($"{name} is {value}; it must be at least {min}.");
    }

    /// <summary>An optional integer option.</summary>
    public int? GetInt(string name)
    {
        var text = GetString(name);
        if (text is null)
        {
            return null;
        }

        return int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value)
            ? value
            : throw CliException.Usage($"{name}: '{text}' is not an integer.");
    }

    /// <summary>An optional floating-point option (invariant culture: <c>0.125</c>, <c>1e-3</c>).</summary>
    public double? GetDouble(string name)
    {
        var text = GetString(name);
        if (text is null)
        {
            return null;
        }

        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value)
            ? value
            : throw CliException.Usage($"{name}: '{text}' is not a number.");
    }

    /// <summary>Per-axis integers: <c>7</c> (every axis) or <c>7x5</c>; <c>null</c> when absent.</summary>
    public AxisValues? GetAxisValues(string name)
    {
        var text = GetString(name);
        if (text is null)
        {
            return null;
        }

        try
        {
            return AxisValues.Parse(text);
        }
        catch (FormatException ex)
        {
            throw CliException.Usage($"{name}: {ex.Message}");
        }
    }

    /// <summary>Per-axis 0/1 flags: <c>1</c> (every axis) or <c>0x1</c>; <c>null</c> when absent.</summary>
    public AxisFlags? GetAxisFlags(string name)
    {
        var text = GetString(name);
        if (text is null)
        {
            return null;
        }

        try
        {
            return AxisFlags.Parse(text);
        }
        catch (FormatException ex)
        {
            throw CliException.Usage($"{name}: {ex.Message}");
        }
    }

    /// <summary>Fused tile shapes <c>Q/KV</c>, e.g. <c>8x8/4x4</c>; <c>null</c> when absent.</summary>
    public FusedTiles? GetTiles(string name)
    {
        var text = GetString(name);
        if (text is null)
        {
            return null;
        }

        try
        {
            return FusedTiles.Parse(text);
        }
        catch (FormatException ex)
        {
            throw CliException.Usage($"{name}: {ex.Message}");
        }
    }

    /// <summary>A comma-separated list of integers, each at least <paramref name="min"/>; <c>null</c> when absent.</summary>
    public int[]? GetIntList(string name, int min)
    {
        var text = GetString(name);
        if (text is null)
        {
            return null;
        }

        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        var values = new int[parts.Length];
        for (var i = 0; i < parts.Length; i++)
        {
            if (!int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out values[i]))
            {
                throw CliException.Usage($"{name}: '{text}' is not a comma-separated list of integers (e.g. 3,5,7).");
            }

            if (values[i] < min)
            {
                throw CliException.Usage($"{name}: {values[i]} is below {min}.");
            }
        }

        return values;
    }

    /// <summary>One of <paramref name="choices"/> (case-insensitive, returned as spelled in the list).</summary>
    public string GetChoice(string name, IReadOnlyList<string> choices, string defaultValue)
    {
        var text = GetString(name);
        if (text is null)
        {
            return defaultValue;
        }

        return choices.FirstOrDefault(c => string.Equals(c, text, StringComparison.OrdinalIgnoreCase))
            ?? throw CliException.Usage($"{name}: '{text}' is not one of {string.Join(", ", choices)}.");
    }

    /// <summary>Fails on the first argument no getter consumed.</summary>
    public void ThrowIfUnused(string command)
    {
        for (var i = 0; i < _args.Length; i++)
        {
            if (!_used[i] && IsOptionName(_args[i]))
            {
                var name = _args[i].Split('=', 2)[0];
                throw CliException.Usage($"unknown option '{name}' for '{command}' (see 'natten {command} --help').");
            }
        }

        for (var i = 0; i < _args.Length; i++)
        {
            if (!_used[i])
            {
                throw CliException.Usage($"unexpected argument '{_args[i]}' for '{command}' (see 'natten {command} --help').");
            }
        }
    }

    private static bool IsOptionName(string arg) => arg.StartsWith("--", StringComparison.Ordinal) && arg.Length > 2;

    /// <summary>The index of the single occurrence of <paramref name="name"/>, or -1; an error when given twice.</summary>
    private int Find(string name, out string? inlineValue)
    {
        var found = -1;
        inlineValue = null;
        for (var i = 0; i < _args.Length; i++)
        {
            if (_used[i])
            {
                continue;
            }

            var arg = _args[i];
            string? value = null;
            if (arg == name)
            {
                // A bare option name.
            }
            else if (arg.Length > name.Length && arg.StartsWith(name, StringComparison.Ordinal) && arg[name.Length] == '=')
            {
                value = arg[(name.Length + 1)..];
            }
            else
            {
                continue;
            }

            if (found >= 0)
            {
                throw CliException.Usage($"{name} is given more than once.");
            }

            found = i;
            inlineValue = value;
        }

        return found;
    }
}
