using System.Diagnostics.CodeAnalysis;

namespace Natten.Validation;

/// <summary>Every exception the API throws for bad input, in one place.</summary>
internal static class ThrowHelper
{
    [DoesNotReturn]
    public static void ThrowOptions(string message) => throw new ArgumentException(message, "options");

    [DoesNotReturn]
    public static void ThrowShape(string message) => throw new ArgumentException(message, "shape");

    [DoesNotReturn]
    public static void ThrowArgument(string paramName, string message) => throw new ArgumentException(message, paramName);

    [DoesNotReturn]
    public static void ThrowLength(string paramName, long actual, long expected, string layout)
        => throw new ArgumentException(
            $"{paramName} has {actual} elements; the shape needs exactly {expected} ({layout}).", paramName);

    [DoesNotReturn]
    public static void ThrowDestinationTooShort(string paramName, long actual, long needed, string layout)
        => throw new ArgumentException(
            $"Destination {paramName} is too short: {actual} elements, {needed} needed ({layout}).", paramName);

    [DoesNotReturn]
    public static void ThrowOverlap(string destination, string other)
        => throw new ArgumentException(
            $"{destination} overlaps {other}; destinations must not share memory with inputs or other destinations.", destination);

    [DoesNotReturn]
    public static void ThrowBackendCannotRun(string name, string reason)
        => throw new NotSupportedException($"Backend '{name}' cannot run this problem: {reason}");

    [DoesNotReturn]
    public static void ThrowNoBackend(IEnumerable<string> reasons)
        => throw new NotSupportedException($"No backend can run this problem: {string.Join("; ", reasons)}");
}
