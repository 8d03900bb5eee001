using Natten.Cli;

namespace Natten.Tests.Cli;

/// <summary><c>natten run --tf32</c>: the flag reaches the fused float32 forward (TF32 products change the result slightly).</summary>
[TestFixture]
public sealed class RunTf32Tests
{
    [Test]
    public void Tf32FlagSwitchesTheFusedFloat32Forward()
    {
        using var dir = new TempDirectory();
        int[] shape = [1, 24, 1, 16]; // 1D, 24 tokens, 1 head, D 16
        var rng = new Random(5);
        float[] RandomArray() => [.. Enumerable.Range(0, shape.Aggregate(1, (a, b) => a * b)).Select(_ => (rng.NextSingle() * 2) - 1)];
        Npy.Write(dir.File("q.npy"), shape, RandomArray());
        Npy.Write(dir.File("k.npy"), shape, RandomArray());
        Npy.Write(dir.File("v.npy"), shape, RandomArray());
        string[] common = ["run", "--query", dir.File("q.npy"), "--key", dir.File("k.npy"), "--value", dir.File("v.npy"), "--kernel-size", "5", "--backend", "fused"];

        CliRunner.Run([.. common, "--output", dir.File("o32.npy")]).AssertSuccess();
        CliRunner.Run([.. common, "--output", dir.File("otf.npy"), "--tf32"]).AssertSuccess();
        var float32 = Npy.Read(dir.File("o32.npy")).Float32Data!;
        var tf32 = Npy.Read(dir.File("otf.npy")).Float32Data!;
        var diff = float32.Zip(tf32, (a, b) => Math.Abs(a - b)).Max();
        Assert.That(diff, Is.GreaterThan(0f), "TF32 products differ from float32 math");
        Assert.That(diff, Is.LessThan(5e-3f), "and stay within TF32 precision of it");
    }
}
