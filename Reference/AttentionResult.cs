namespace Natten.Reference;

/// <summary>Output <c>[B, N, H, Dv]</c> and natural-log LSE <c>[B, N, H]</c> of a forward pass.</summary>
/// <param name="Output">Attention output.</param>
/// <param name="LogSumExp">Log-sum-exp of the scaled scores over each query's allowed keys.</param>
public sealed record AttentionResult(double[] Output, double[] LogSumExp);

/// <summary>Gradients of a backward pass, each in the layout of the tensor it differentiates.</summary>
/// <param name="Query">dQ.</param>
/// <param name="Key">dK.</param>
/// <param name="Value">dV.</param>
/// <param name="AdditionalKey">d(additional K), empty when there are no additional tokens.</param>
/// <param name="AdditionalValue">d(additional V), empty when there are no additional tokens.</param>
public sealed record AttentionGradients(
    double[] Query, double[] Key, double[] Value, double[] AdditionalKey, double[] AdditionalValue);
