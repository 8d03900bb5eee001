namespace Natten.Tests.Support;

/// <summary>Seeded random tensors and problems for tests.</summary>
internal static class TestData
{
    /// <summary>Uniform values in [-1, 1).</summary>
    public static double[] Doubles(Random rng, long length)
    {
        var data = new double[length];
        for (var i = 0; i < data.Length; i++)
        {
            data[i] = (rng.NextDouble() * 2) - 1;
        }

        return data;
    }

    public static float[] Floats(Random rng, long length) => Doubles(rng, length).Select(x => (float)x).ToArray();

    public static double[] ToDouble(float[] data) => data.Select(x => (double)x).ToArray();

    public static double[] ToDouble(Half[] data) => data.Select(x => (double)x).ToArray();

    public static double MaxAbsDiff(ReadOnlySpan<double> expected, ReadOnlySpan<float> actual)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), "length");
        var max = 0.0;
        for (var i = 0; i < expected.Length; i++)
        {
            var diff = Math.Abs(expected[i] - actual[i]);
            max = double.IsNaN(diff) ? double.PositiveInfinity : Math.Max(max, diff);
        }

        return max;
    }

    public static double MaxAbsDiff(ReadOnlySpan<double> expected, ReadOnlySpan<double> actual)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), "length");
        var max = 0.0;
        for (var i = 0; i < expected.Length; i++)
        {
            var diff = Math.Abs(expected[i] - actual[i]);
            max = double.IsNaN(diff) ? double.PositiveInfinity : Math.Max(max, diff);
        }

        return max;
    }

    /// <summary>Number of configurations for random sweeps: quick by default, extended with NATTEN_EXTENDED_SWEEP=1.</summary>
    public static int SweepCount(int quick, int extended)
        => Environment.GetEnvironmentVariable("NATTEN_EXTENDED_SWEEP") is "1" or "true" ? extended : quick;
}
