using DistTrain.Cuda;
using DistTrain.Model;
using DistTrain.Model.Kernels;
using DistTrain.Training.Config;
using DistTrain.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training.Diagnostics;

/// <summary>
/// The whole model: a 3-layer MUDDFormer of the 405M shape (dim 1024, 16 heads, vocabulary 50432; --config picks another architecture),
/// 2 × 256 tokens, no activation checkpointing. The loss and every parameter's gradient with the
/// fused kernels and with the reference, both against the reference on the same (bf16-valued)
/// weights in fp64; rel = max |Δ| / max |fp64| per parameter. Covers every fused op the model calls,
/// HiddenGradients' in-place buffers (the add path of the mix backward) and the loss kernel included.
/// - fp32 (the fused kernels all take fp32): tolerance 1e-5 on the loss and 1e-3 on each gradient,
///   or no worse than twice the reference's error: the exact check of the wiring.
/// - bf16 in flat buffers as the trainer holds it: 5e-3 on the loss; the gradients of this
///   random-init model are dominated by bf16 rounding in both implementations (rel 0.1–1.7 against
///   fp64, varying by 3x from run to run for the reference itself: cuBLAS and SDPA are not bitwise
///   deterministic), so a gradient passes within 3e-2 or 4x the reference's error, and one the reference
///   itself misses by more than 5% is reported as "(noise)" and not gated.
/// Then the block and mudd checkpointing policies with the fused kernels in bf16 (recomputed in
/// backward): the loss and the worst parameter's rel against the worst of the reference without checkpointing.
/// </summary>
public static partial class KernelSelfTest
{
    public const string DefaultModelConfig = "configs/405m-muddformer.yaml";
    const long Batch = 2, SeqLen = 256;

    internal static List<KernelCheck> WholeModel(IKernels kernels, Device device, string configPath, Action<string> line)
    {
        var config = ModelConfigFor(configPath, line);
        using var scope = NewDisposeScope();
        using var model16 = Build(config);
        using var model64 = Build(config);
        using var flat16 = new FlatParameters(model16, ScalarType.BFloat16, device);
        using var flat64 = new FlatParameters(model64, ScalarType.Float64, device);
        using (no_grad()) flat64.Master.copy_(flat16.Params);   // the same weights, bf16 values exactly
        Seed(99);
        var tokens = randint(config.VocabSize, [Batch, SeqLen + 1], dtype: ScalarType.Int64, device: device);
        var (x, y) = (tokens.narrow(1, 0, SeqLen).contiguous(), tokens.narrow(1, 1, SeqLen).contiguous());
        var truth = LossAndGrads(model64, flat64, ReferenceKernels.Instance, x, y);
        string shape = $"{Batch}x{SeqLen} 3 layers";
        string arch = config.Arch.ToString().ToLowerInvariant();
        var result = new List<KernelCheck>();
        void Compare(string name, string output, Tensor f, Tensor r, Tensor t, double tol, double slack = 2) =>
            result.Add(new KernelCheck(arch, name, shape, output, Error(f, t).Abs, Error(f, t).Rel, Error(r, t).Rel, tol, slack));
        using (var model32 = Build(config))
        using (var flat32 = new FlatParameters(model32, ScalarType.Float32, device))
        {
            using (no_grad()) flat32.Master.copy_(flat16.Params);
            var reference32 = LossAndGrads(model32, flat32, ReferenceKernels.Instance, x, y);
            var fused32 = LossAndGrads(model32, flat32, kernels, x, y);
            Synchronize(device);
            Compare("fp32", "loss", fused32.Loss, reference32.Loss, truth.Loss, 1e-5);
            foreach (var (param, offset, dims) in flat32.Layout)
            {
                long n = dims.Aggregate(1L, (a, b) => a * b);
                Compare("fp32", param, fused32.Grads.narrow(0, offset, n), reference32.Grads.narrow(0, offset, n), truth.Grads.narrow(0, offset, n), 1e-3);
            }
        }
        var reference = LossAndGrads(model16, flat16, ReferenceKernels.Instance, x, y);
        var fused = LossAndGrads(model16, flat16, kernels, x, y);
        Synchronize(device);
        string name = DtypeName(ScalarType.BFloat16);
        Compare(name, "loss", fused.Loss, reference.Loss, truth.Loss, 5e-3);
        foreach (var (param, offset, dims) in flat16.Layout)
        {
            long n = dims.Aggregate(1L, (a, b) => a * b);
            var (f, r, t) = (fused.Grads.narrow(0, offset, n), reference.Grads.narrow(0, offset, n), truth.Grads.narrow(0, offset, n));
            // where the reference itself misses fp64 by more than 5%, bf16 cannot resolve that gradient (dense_bs.*: a
            // 512-token sum that nearly cancels): reported, not gated; the fp32 rows above are the exact check of it. (At 10%,
            // dense_bs.0 was gated on a lucky 6.8% of the reference and failed at 53% fused, with both at 4.5e-5 in fp32.)
            bool noise = Error(r, t).Rel > 0.05;
            Compare(name, noise ? $"{param} (noise)" : param, f, r, t, 3e-2, slack: noise ? double.PositiveInfinity : 4);
        }
        // the checkpointing policies that recompute the fused ops (mudd: the mix too) in backward: the loss, and the worst parameter
        foreach (var kind in new[] { CheckpointKind.Block, CheckpointKind.Mudd })
        {
            model16.Checkpointing = new ActivationCheckpointing(kind);
            var checkpointed = LossAndGrads(model16, flat16, kernels, x, y);
            model16.Checkpointing = ActivationCheckpointing.Off;
            Synchronize(device);
            string policy = kind.ToString().ToLowerInvariant();
            Compare(name, $"loss ({policy})", checkpointed.Loss, reference.Loss, truth.Loss, 5e-3);
            double abs = 0, rel = 0, referenceRel = 0;
            foreach (var (_, offset, dims) in flat16.Layout)
            {
                long n = dims.Aggregate(1L, (a, b) => a * b);
                var t = truth.Grads.narrow(0, offset, n);
                var (a, r) = Error(checkpointed.Grads.narrow(0, offset, n), t);
                (abs, rel, referenceRel) = (Math.Max(abs, a), Math.Max(rel, r), Math.Max(referenceRel, Error(reference.Grads.narrow(0, offset, n), t).Rel));
            }
            result.Add(new KernelCheck(arch, name, shape, $"grads ({policy}, worst)", abs, rel, referenceRel, 3e-2, Slack: 4));
        }
        return result;
    }

    /// <summary>The config's model section with n_layer 3; without the file (the GPU bundle has no configs/), the same built in.</summary>
    static ModelConfig ModelConfigFor(string path, Action<string> line)
    {
        if (File.Exists(path))
            return TrainConfigLoader.LoadModel(path, ["model.n_layer=3"]);
        ModelSizes.TryGet("405m", out var size);
        line($"note: {path} not found (run from the repository root, or --config); the whole-model check uses its model section built in: 405m, qkvr, sepln, qk-norm, 3 layers");
        return size with { Arch = Architecture.MUDDFormer, UseQkNorm = true, Sepln = true, DenseType = "qkvr", ExpandLast = true, Round64 = true, NLayer = 3 };
    }

    /// <summary>A seeded fp32 model on the CPU whose zero-initialised parts (dynamic_dense, dense_bs) and norms are perturbed, so every path carries signal.</summary>
    static LanguageModel Build(ModelConfig config)
    {
        manual_seed(1234);
        var model = new LanguageModel(config);
        using var scope = NewDisposeScope();
        using (no_grad())
            foreach (var (name, p) in model.named_parameters())
                if (name.StartsWith("dynamic_dense.") || name.StartsWith("dense_bs.") || name.Contains("norm"))
                    p.PlusInPlace(randn_like(p).Times(0.1));
        return model;
    }

    /// <summary>Waits for the device (an asynchronous kernel error surfaces here, at its check); nothing on the CPU (the checks' own tests).</summary>
    static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize(device);
    }

    /// <summary>The mean next-token loss and the flat gradient buffer (a copy) with these kernels.</summary>
    static (Tensor Loss, Tensor Grads) LossAndGrads(LanguageModel model, FlatParameters flat, IKernels kernels, Tensor x, Tensor y)
    {
        model.Kernels = kernels;
        flat.Grads.zero_();
        var loss = model.Loss(x, y, chunkRows: SeqLen);
        loss.backward();
        return (loss.detach(), flat.Grads.clone());
    }
}
