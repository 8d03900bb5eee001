// A small vision-transformer block with 2D neighborhood attention (NA2D), using the NATTEN.Net package:
//   y = x + Proj(NA2D(LayerNorm(x) · Wqkv)),  x: a procedurally generated 32×32 "image" of C = 64 channels.
// Weights are random with a fixed seed, so the checksum is the same on every run (up to the backend's
// float rounding). Usage: dotnet run -c Release [-- BACKEND]   (BACKEND: see AttentionBackends.Names)

using System.Diagnostics;
using System.Globalization;
using Natten;

const int Height = 32, Width = 32, Channels = 64, Heads = 4, KernelSize = 7, Repeats = 5;
const int HeadDim = Channels / Heads;
const int Tokens = Height * Width;

var backend = args.Length > 0 ? args[0] : null;
var inv = CultureInfo.InvariantCulture;

// The image: smooth stripes and rings per channel, heads-last layout [B=1, 32, 32, C].
var image = new float[Tokens * Channels];
for (var y = 0; y < Height; y++)
{
    for (var x = 0; x < Width; x++)
    {
        var r = MathF.Sqrt(((y - 15.5f) * (y - 15.5f)) + ((x - 15.5f) * (x - 15.5f)));
        for (var c = 0; c < Channels; c++)
        {
            image[(((y * Width) + x) * Channels) + c] =
                (MathF.Sin((0.3f * y) + (0.11f * c)) * MathF.Cos((0.2f * x) - (0.07f * c))) + (0.5f * MathF.Sin((0.4f * r) + (0.05f * c)));
        }
    }
}

// Random projections with a fixed seed, scaled by 1/sqrt(fan-in).
var rng = new Random(2024);
var wQkv = RandomMatrix(rng, Channels, 3 * Channels);
var wOut = RandomMatrix(rng, Channels, Channels);

var shape = new AttentionShape(Batch: 1, Spatial: (Height, Width), Heads: Heads, HeadDim: HeadDim);
var options = new NeighborhoodAttentionOptions(kernelSize: KernelSize) { Backend = backend };
var chosen = AttentionBackends.Select(shape, options, ElementType.Float32);
Console.WriteLine($"NATTEN.Net VisionBlock: {Height}x{Width} image, C={Channels}, {Heads} heads of {HeadDim}, NA2D kernel {KernelSize}x{KernelSize}");
Console.WriteLine($"backend: {chosen} ({AttentionBackends.Describe(chosen)})");

var q = new float[Tokens * Channels];
var k = new float[Tokens * Channels];
var v = new float[Tokens * Channels];
var attention = new float[Tokens * Channels];
var output = new float[Tokens * Channels];

var first = Stopwatch.StartNew();
Block();
first.Stop();

var blockMs = new double[Repeats];
var attentionMs = new double[Repeats];
for (var i = 0; i < Repeats; i++)
{
    var start = Stopwatch.GetTimestamp();
    attentionMs[i] = Block();
    blockMs[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
}

Console.WriteLine($"attention output [1, {Height}, {Width}, {Heads}, {HeadDim}]: sum {attention.Sum(a => (double)a).ToString("F4", inv)}, "
                + $"sum |x| {attention.Sum(a => Math.Abs((double)a)).ToString("F4", inv)}, [0] {attention[0].ToString("F6", inv)}");
Console.WriteLine($"block output [1, {Height}, {Width}, {Channels}]: sum {output.Sum(a => (double)a).ToString("F4", inv)}");
Console.WriteLine($"time: first call {first.Elapsed.TotalMilliseconds.ToString("F1", inv)} ms (includes JIT and kernel compilation); "
                + $"then median of {Repeats}: attention {Median(attentionMs).ToString("F2", inv)} ms, whole block {Median(blockMs).ToString("F2", inv)} ms");
return 0;

// One forward pass of the block; returns the attention call's milliseconds.
double Block()
{
    // Pre-norm, then Q, K, V: each token's C channels split into heads × D, which is already the heads-last layout.
    var normed = LayerNorm(image);
    for (var t = 0; t < Tokens; t++)
    {
        for (var o = 0; o < 3 * Channels; o++)
        {
            var sum = 0f;
            for (var c = 0; c < Channels; c++)
            {
                sum += normed[(t * Channels) + c] * wQkv[(c * 3 * Channels) + o];
            }

            var target = o < Channels ? q : o < 2 * Channels ? k : v;
            target[(t * Channels) + (o % Channels)] = sum;
        }
    }

    var start = Stopwatch.GetTimestamp();
    NeighborhoodAttention.Forward(q, k, v, shape, options, attention);
    var ms = Stopwatch.GetElapsedTime(start).TotalMilliseconds;

    // Output projection and the residual.
    for (var t = 0; t < Tokens; t++)
    {
        for (var o = 0; o < Channels; o++)
        {
            var sum = 0f;
            for (var c = 0; c < Channels; c++)
            {
                sum += attention[(t * Channels) + c] * wOut[(c * Channels) + o];
            }

            output[(t * Channels) + o] = image[(t * Channels) + o] + sum;
        }
    }

    return ms;
}

static float[] LayerNorm(float[] x)
{
    var result = new float[x.Length];
    for (var t = 0; t < x.Length / Channels; t++)
    {
        var row = x.AsSpan(t * Channels, Channels);
        var mean = 0f;
        foreach (var value in row)
        {
            mean += value;
        }

        mean /= Channels;
        var variance = 0f;
        foreach (var value in row)
        {
            variance += (value - mean) * (value - mean);
        }

        var scale = 1f / MathF.Sqrt((variance / Channels) + 1e-5f);
        for (var c = 0; c < Channels; c++)
        {
            result[(t * Channels) + c] = (row[c] - mean) * scale;
        }
    }

    return result;
}

static float[] RandomMatrix(Random rng, int rows, int columns)
{
    var scale = 1f / MathF.Sqrt(rows);
    var m = new float[rows * columns];
    for (var i = 0; i < m.Length; i++)
    {
        m[i] = ((rng.NextSingle() * 2) - 1) * scale;
    }

    return m;
}

static double Median(double[] values)
{
    var sorted = values.Order().ToArray();
    return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
}
