using static TorchSharp.torch;

namespace DistTrain.Model.Layers;

public static class Precision
{
    /// <summary>The dtype that norms, rotary, softmax and the loss run in: fp32, or fp64 when the model runs in fp64 (gradient checks).</summary>
    public static Tensor Upcast(Tensor x) => x.dtype == ScalarType.Float64 ? x.alias() : x.to(ScalarType.Float32);

    public static ScalarType Parse(string name) => name switch
    {
        "fp32" or "float32" => ScalarType.Float32,
        "bf16" or "bfloat16" => ScalarType.BFloat16,
        "fp64" or "float64" => ScalarType.Float64,
        _ => throw new ArgumentException($"precision '{name}' is not known; use fp32 or bf16"),
    };
}
