namespace Natten.Backends;

/// <summary>
/// A backend with a native bfloat16 path. Backends without one still run bf16 calls: the entry
/// point widens the inputs to float32 (exactly), runs the float32 path and rounds the output.
/// </summary>
internal interface IBFloat16Backend
{
    void ForwardBFloat16(AttentionProblem problem, in ForwardTensors<ushort> tensors);

    void BackwardBFloat16(AttentionProblem problem, in BackwardTensors<ushort> tensors);
}
