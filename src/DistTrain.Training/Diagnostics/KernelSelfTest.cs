using System.Globalization;
using DistTrain.Cuda;
using DistTrain.Cuda.Ops.AdamW;
using DistTrain.Model;
using DistTrain.Model.Kernels;
using DistTrain.Training.Config;
using DistTrain.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training.Diagnostics;

/// <summary>One comparison of a fused kernel's output with the reference: error relative to the reference's largest magnitude.</summary>
public sealed record KernelCheck(string Op, string Dtype, string Shape, string Output, double MaxAbs, double Rel, double ReferenceRel, double Tolerance, double Slack = 2)
{
    /// <summary>Within the tolerance, or no worse than <see cref="Slack"/> times the reference's own error against fp64 (cancellation-prone shapes such as D = 1).</summary>
    public bool Pass => Rel <= Tolerance || (double.IsFinite(ReferenceRel) && Rel <= Slack * ReferenceRel);

    public string Row() => string.Create(CultureInfo.InvariantCulture,
        $"{Op,-16} {Dtype,-5} {Shape,-18} {Output,-8} {MaxAbs,11:0.000e+00} {Rel,11:0.000e+00} {(double.IsNaN(ReferenceRel) ? "-" : ReferenceRel.ToString("0.000e+00", CultureInfo.InvariantCulture)),11} {Tolerance,9:0.0e+00}  {(Pass ? "PASS" : "FAIL")}");

    public const string Header = "op               dtype shape              output       max abs         rel     ref rel       tol  result";
}

/// <summary>
/// `disttrain kernel-test`: every fused kernel's forward and backward against the reference on a
/// CUDA device, on odd and real (405M) shapes. RMSNorm: fused and reference (same dtype) are both
/// measured against the reference in fp64; rel = max |out − fp64| / max |fp64|; tolerance 1e-5
/// (fp32) and 1e-2 (bf16: 2^-8 is one bf16 step at 1.0). AdamW: fused against the reference
/// FlatAdamW after four steps (one with a NaN gradient, which must change nothing), tolerance 1e-5
/// on the fp32 state and 1e-2 on the bf16 parameters. The residual add fused with RMSNorm, SwiGLU and QK-rotary, the loss's cross-entropy,
/// the MUDD mixing and the whole-model check: KernelSelfTest.*.cs.
/// </summary>
public static partial class KernelSelfTest
{
    const double Eps = 1e-5;

    // D = 1 is left out: its dx is a cancellation (dy·(1 − x̂²)·r with x̂² ≈ 1) that neither implementation resolves in fp32
    static readonly (long Rows, long D)[] NormShapes =
    [
        (1, 2), (3, 7), (5, 1000), (2, 1024), (3, 4096), (1, 8192), (2048 * 8, 1024),   // 405M: B·T = 8·2048 rows of dim 1024
        (2048 * 8 * 16, 64),                                                              // 405M QK-norm: 16 heads of 64 per token
    ];

    static readonly long[] AdamWSizes = [1, 1007, 3 * (1 << 20) + 5, 405_000_000];

    /// <summary>Runs every check; <paramref name="modelConfig"/>: the config whose model section (3 layers) the whole-model check builds.</summary>
    public static IReadOnlyList<KernelCheck> Run(int deviceIndex, Action<string> line, string modelConfig = DefaultModelConfig)
    {
        var kernels = CudaKernels.Create(deviceIndex);
        line(kernels.Describe());
        var device = new Device(DeviceType.CUDA, deviceIndex);
        var checks = new List<KernelCheck>();
        void Add(IEnumerable<KernelCheck> found)
        {
            foreach (var c in found)
            {
                checks.Add(c);
                line(c.Row());
            }
        }
        line(KernelCheck.Header);
        Seed(1234);
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            foreach (var (rows, d) in NormShapes)
                foreach (bool scaled in new[] { true, false })
                    Add(RmsNorm(kernels, device, dtype, rows, d, scaled));
        foreach (var (sets, rows, d) in NormSetShapes)
            Add(RmsNormSets(kernels, device, sets, rows, d));
        Add(AddRmsNorms(kernels, device));         // KernelSelfTest.AddRmsNorm.cs
        Add(SwiGluAndQkRotary(kernels, device));   // KernelSelfTest.SwiGluQkRotary.cs
        foreach (var shape in QkvShapes)           // KernelSelfTest.Qkv.cs
            foreach (bool normed in new[] { true, false })
                Add(Qkv(kernels, device, shape, normed));
        Add(CrossEntropy(kernels, device));        // KernelSelfTest.CrossEntropy.cs
        using var adamW = new FusedAdamW(kernels.Device);
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            foreach (long n in AdamWSizes)
                if (dtype == ScalarType.BFloat16 || n < 100_000_000)   // the 405M buffer once, in bf16 as trained
                    Add(AdamW(adamW, device, dtype, n));
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            foreach (var shape in MixShapes)
                Add(Mix(kernels, device, dtype, shape));
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            foreach (var shape in ChainShapes)
                Add(MixChain(kernels, device, dtype, shape));
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            foreach (var shape in AverageShapes)
                Add(Average(kernels, device, dtype, shape));
        Add(WholeModel(kernels, device, modelConfig, line));
        if (CudaKernels.CacheProblem is { } problem) line($"note: a compiled kernel could not be cached: {problem}");
        return checks;
    }

    static List<KernelCheck> RmsNorm(CudaKernels kernels, Device device, ScalarType dtype, long rows, long d, bool scaled)
    {
        using var scope = NewDisposeScope();
        using var ten = tensor(10.0);
        var x = randn([rows, d], ScalarType.Float32, device).to(dtype);
        var w = scaled ? randn([d], ScalarType.Float32, device).div(ten).exp_().to(dtype) : null;   // about 1 ± 0.1
        var dy = randn([rows, d], ScalarType.Float32, device).to(dtype);
        var truth = Run(ReferenceKernels.Instance, x.to(ScalarType.Float64), w?.to(ScalarType.Float64), dy.to(ScalarType.Float64));
        var reference = Run(ReferenceKernels.Instance, x, w, dy);
        var fused = Run(kernels, x, w, dy);
        cuda.synchronize(device);   // an asynchronous kernel error surfaces here, at its op
        double tol = dtype == ScalarType.Float32 ? 1e-5 : 1e-2;
        string op = scaled ? "rmsnorm" : "rmsnorm_noscale", shape = $"{rows}x{d}", name = DtypeName(dtype);
        var result = new List<KernelCheck>();
        string[] outputs = scaled ? ["y", "dx", "dw"] : ["y", "dx"];
        for (int i = 0; i < outputs.Length; i++)
        {
            var (abs, rel) = Error(fused[i], truth[i]);
            result.Add(new KernelCheck(op, name, shape, outputs[i], abs, rel, Error(reference[i], truth[i]).Rel, tol));
        }
        if (scaled)
        {
            // dw added into a preset .grad (the trainer's flat buffer view) by the fused reduce, by autograd's add in the reference
            var g0 = randn([d], ScalarType.Float32, device).to(dtype);
            var truthSum = g0.to(ScalarType.Float64).Plus(truth[2]);
            var (abs, rel) = Error(AccumulatedDw(kernels, x, w!, dy, g0), truthSum);
            result.Add(new KernelCheck(op, name, shape, "dw+=", abs, rel, Error(AccumulatedDw(ReferenceKernels.Instance, x, w!, dy, g0), truthSum).Rel, tol));
        }
        return result;
    }

    // sepln's Q, K, V norms at the 405M shape, and small ones (one launch for all: bf16, D a multiple of 256 up to 1024)
    static readonly (int Sets, long Rows, long D)[] NormSetShapes = [(3, 2048 * 8, 1024), (3, 5, 256), (2, 37, 768)];

    /// <summary>
    /// Several norms in one launch (<see cref="IKernels.RmsNorms"/>), bf16, against fp64: each y, dx and dw (the second
    /// set's weight holds a preset .grad, which its dw is added into), tolerance 1e-2 as for one norm.
    /// </summary>
    static List<KernelCheck> RmsNormSets(CudaKernels kernels, Device device, int sets, long rows, long d)
    {
        using var scope = NewDisposeScope();
        using var ten = tensor(10.0);
        var xs = Enumerable.Range(0, sets).Select(_ => randn([rows, d], ScalarType.Float32, device).to(ScalarType.BFloat16)).ToArray();
        var ws = Enumerable.Range(0, sets).Select(_ => randn([d], ScalarType.Float32, device).div(ten).exp_().to(ScalarType.BFloat16)).ToArray();
        var dys = Enumerable.Range(0, sets).Select(_ => randn([rows, d], ScalarType.Float32, device).to(ScalarType.BFloat16)).ToArray();
        var g0 = randn([d], ScalarType.Float32, device).to(ScalarType.BFloat16);
        if (!kernels.FusesRmsNorms(xs, ws))
            throw new InvalidOperationException($"rmsnorm sets: the fused kernels refused {sets} x [{rows}, {d}]");
        // outputs: y_i, dx_i, the weights' .grad (set 1: g0 + dw_1)
        List<Tensor> Run(IKernels k, ScalarType dtype)
        {
            var xi = xs.Select(x => x.to(dtype).detach().requires_grad_(true)).ToArray();
            var wi = ws.Select(w => w.to(dtype).detach().requires_grad_(true)).ToArray();
            wi[1].grad = g0.to(dtype).clone();   // a copy: g0 itself would be added into (bf16: to() returns g0)
            var ys = k.RmsNorms(xi, wi, Eps);
            autograd.backward(ys, dys.Select(g => g.to(dtype)).ToArray());
            return [.. ys.Select(y => y.detach()), .. xi.Select(x => x.grad!), .. wi.Select(w => w.grad!)];
        }
        var truth = Run(ReferenceKernels.Instance, ScalarType.Float64);
        var reference = Run(ReferenceKernels.Instance, ScalarType.BFloat16);
        var fused = Run(kernels, ScalarType.BFloat16);
        cuda.synchronize(device);
        var result = new List<KernelCheck>();
        string[] kinds = ["y", "dx", "dw"];
        for (int i = 0; i < truth.Count; i++)
        {
            var (abs, rel) = Error(fused[i], truth[i]);
            string output = $"{kinds[i / sets]}{i % sets}{(i / sets == 2 && i % sets == 1 ? "+=" : "")}";
            result.Add(new KernelCheck("rmsnorm_sets", "bf16", $"{sets}x{rows}x{d}", output, abs, rel, Error(reference[i], truth[i]).Rel, 1e-2));
        }
        return result;
    }

    /// <summary>The weight's .grad after one backward into a preset <paramref name="g0"/>: g0 + dw.</summary>
    static Tensor AccumulatedDw(IKernels kernels, Tensor x, Tensor w, Tensor dy, Tensor g0)
    {
        var xi = x.detach().requires_grad_(true);
        var wi = w.detach().requires_grad_(true);
        wi.grad = g0.clone();
        kernels.RmsNorm(xi, wi, Eps).backward([dy]);
        return wi.grad!.detach();
    }

    /// <summary>y, dx and (with a weight) dw of one RMSNorm with output gradient dy.</summary>
    static Tensor[] Run(IKernels kernels, Tensor x, Tensor? w, Tensor dy)
    {
        var xi = x.detach().requires_grad_(true);
        var wi = w?.detach().requires_grad_(true);
        var y = kernels.RmsNorm(xi, wi, Eps);
        var inputs = wi is null ? new[] { xi } : new[] { xi, wi };
        var grads = autograd.grad([y], inputs, [dy]);
        return [y.detach(), .. grads];
    }

    static List<KernelCheck> AdamW(FusedAdamW fused, Device device, ScalarType dtype, long n)
    {
        using var scope = NewDisposeScope();
        var options = new OptimOptions(Lr: 1e-3, MinLrRatio: 0.1, WarmupSteps: 0, WeightDecay: 0.1, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, GradClip: 1.0);
        using var refModel = new Blob(n, seed: 7);
        using var fusedModel = new Blob(n, seed: 7);
        using var refFlat = new FlatParameters(refModel, dtype, device);
        using var fusedFlat = new FlatParameters(fusedModel, dtype, device);
        using var refOpt = new FlatAdamW(refFlat, options);
        using var fusedOpt = new FlatAdamW(fusedFlat, options, fused);
        if (fusedOpt.Implementation != "fused")
            throw new InvalidOperationException($"adamw: the fused step refused {dtype} buffers of {n}");
        Tensor? refNorm = null, fusedNorm = null;
        using var nan = tensor(float.NaN);
        using var small = tensor(1e-3);
        for (int step = 0; step < 4; step++)
        {
            var g = randn([refFlat.Count], ScalarType.Float32, device);
            if (step == 0) g.mul_(small);                                // under the clip norm: no clipping
            if (step == 2) g.narrow(0, n / 2, 1).copy_(nan);             // a non-finite step: nothing may change
            refFlat.Grads.copy_(g);
            fusedFlat.Grads.copy_(g);
            var rn = refOpt.Step(options.Lr, step);
            var fn = fusedOpt.Step(options.Lr, step);
            if (step != 2) (refNorm, fusedNorm) = (rn, fn);
        }
        cuda.synchronize(device);
        string shape = $"{n}", name = DtypeName(dtype);
        var result = new List<KernelCheck>();
        void Compare(string output, Tensor f, Tensor r, double tol)
        {
            var (abs, rel) = Error(f, r);
            result.Add(new KernelCheck("adamw", name, shape, output, abs, rel, double.NaN, tol));
        }
        Compare("norm", fusedNorm!, refNorm!, 1e-5);
        Compare("master", fusedFlat.Master, refFlat.Master, 1e-5);
        Compare("exp_avg", fusedOpt.ExpAvg, refOpt.ExpAvg, 1e-5);
        Compare("exp_avg_sq", fusedOpt.ExpAvgSq, refOpt.ExpAvgSq, 1e-5);
        if (dtype == ScalarType.BFloat16) Compare("params", fusedFlat.Params, refFlat.Params, 1e-2);
        // the step count (3 finite of 4) and the first non-finite step (2) must be exact
        bool scalars = fusedOpt.Counters == refOpt.Counters && refOpt.Counters == (3.0, 2L);
        result.Add(new KernelCheck("adamw", name, shape, "steps", scalars ? 0 : 1, scalars ? 0 : 1, double.NaN, 0));
        return result;
    }

    /// <summary>Max |a − b| and that over max |b| (0 when both are 0), in fp64.</summary>
    static (double Abs, double Rel) Error(Tensor actual, Tensor expected)
    {
        using var scope = NewDisposeScope();
        var a = actual.detach().to(ScalarType.Float64);
        var b = expected.detach().to(ScalarType.Float64);
        double abs = a.sub(b).abs().max().item<double>();
        double scale = b.abs().max().item<double>();
        return (abs, scale > 0 ? abs / scale : abs);
    }

    /// <summary>
    /// The CPU and every CUDA generator: the checks draw their inputs on the device, and the same checks drew different values
    /// from run to run with the CPU generator seeded alone (a bf16 check at the edge of its tolerance passed or failed with them).
    /// </summary>
    internal static void Seed(long seed)
    {
        manual_seed(seed);
        if (cuda.is_available()) cuda.manual_seed_all(seed);
    }

    static string DtypeName(ScalarType t) => t == ScalarType.BFloat16 ? "bf16" : "fp32";

    /// <summary>n parameters: a matrix (decayed) of about n·3/4 and a vector (not decayed) with the rest, like a model's flat layout.</summary>
    sealed class Blob : nn.Module
    {
        public Blob(long n, int seed) : base(nameof(Blob))
        {
            using var g = new Generator((ulong)seed);
            long matrix = n * 3 / 4 / 64 * 64;
            if (matrix > 0) register_parameter("w", nn.Parameter(randn([matrix / 64, 64], generator: g)));
            register_parameter("b", nn.Parameter(randn([n - matrix], generator: g)));
        }
    }
}
