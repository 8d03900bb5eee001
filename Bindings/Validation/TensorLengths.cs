namespace Natten.Validation;

/// <summary>Element counts of one forward call's tensors; <see cref="LogSumExp"/> is null when no LSE is wanted.</summary>
internal readonly record struct ForwardLengths(
    long Query, long Key, long Value, long AdditionalKey, long AdditionalValue, long Output, long? LogSumExp);

/// <summary>Element counts of one backward call's tensors.</summary>
internal readonly record struct BackwardLengths(
    long Query, long Key, long Value, long AdditionalKey, long AdditionalValue, long Output, long LogSumExp, long OutputGrad,
    long QueryGrad, long KeyGrad, long ValueGrad, long AdditionalKeyGrad, long AdditionalValueGrad);
