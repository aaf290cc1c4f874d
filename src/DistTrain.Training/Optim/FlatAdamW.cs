using DistTrain.Cuda.Ops.AdamW;
using DistTrain.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training.Optim;

/// <summary>
/// AdamW (decoupled weight decay) over the flat fp32 master, with global-norm gradient clipping.
/// A handful of whole-buffer operations per step and no host sync: the step count, the
/// "all finite" flag and the first non-finite step live on the device. A step whose gradients
/// are not finite changes nothing (moments frozen, no update); the trainer reads
/// <see cref="FirstNonFiniteStep"/> when it logs and stops the run. With a <see cref="FusedAdamW"/>
/// the step is two CUDA kernels with the same semantics; <see cref="ReferenceStep"/> is the plain
/// path (CPU, CI, train.kernels=reference) that the GPU self-test compares them with.
/// </summary>
public sealed class FlatAdamW : IDisposable
{
    readonly FlatParameters _flat;
    readonly Config.OptimOptions _o;
    readonly Tensor _m, _v, _g;            // fp32 (or fp64) flat
    readonly Tensor _step, _firstBad;      // 0-dim device scalars
    readonly FusedAdamW? _fused;
    readonly AdamWBuffers _buffers;
    readonly AdamWSettings _settings;

    /// <param name="fused">the fused step (train.kernels); null or unable to take these buffers (fp64): the reference step</param>
    public FlatAdamW(FlatParameters flat, Config.OptimOptions options, FusedAdamW? fused = null)
    {
        _flat = flat;
        _o = options;
        _m = zeros_like(flat.Master);
        _v = zeros_like(flat.Master);
        _step = zeros([], ScalarType.Float64, flat.Master.device);
        _firstBad = tensor(-1L, ScalarType.Int64, flat.Master.device);
        _buffers = new AdamWBuffers(flat.Master, flat.Grads, _m, _v, ReferenceEquals(flat.Master, flat.Params) ? null : flat.Params, flat.DecayCount, _step, _firstBad);
        _settings = new AdamWSettings(options.Beta1, options.Beta2, options.Eps, options.WeightDecay, options.GradClip);
        _fused = fused is not null && fused.Supports(_buffers) ? fused : null;
        // the fused step reads the compute-dtype gradients directly: no fp32 copy
        _g = _fused is not null || ReferenceEquals(flat.Master, flat.Params) ? flat.Grads : zeros_like(flat.Master);
    }

    /// <summary>"fused" or "reference": which step runs.</summary>
    public string Implementation => _fused is null ? "reference" : "fused";

    public Tensor ExpAvg => _m;
    public Tensor ExpAvgSq => _v;

    /// <summary>The counters a checkpoint keeps: steps with finite gradients (bias correction) and the first non-finite step. Reading syncs.</summary>
    public (double Steps, long FirstNonFinite) Counters
    {
        get => (_step.item<double>(), _firstBad.item<long>());
        set
        {
            using var steps = Scalars.Owned(value.Steps);
            using var firstBad = Scalars.Owned(value.FirstNonFinite);
            _step.fill_(steps);
            _firstBad.fill_(firstBad);
        }
    }

    /// <summary>-1 while every step had finite gradients, else the first step (as passed to <see cref="Step"/>) that did not. Reading it syncs.</summary>
    public long FirstNonFiniteStep => _firstBad.item<long>();

    /// <summary>Clips, then updates the master and the compute-dtype parameters. Returns the pre-clip gradient norm (a device scalar).</summary>
    public Tensor Step(double lr, int step) => _fused is not null ? _fused.Step(_buffers, _settings, lr, step) : ReferenceStep(lr, step);

    /// <summary>The step as whole-buffer TorchSharp ops.</summary>
    Tensor ReferenceStep(double lr, int step)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var lrScalar = Scalars.Owned(lr);
        if (!ReferenceEquals(_g, _flat.Grads)) _g.copy_(_flat.Grads);
        var norm = _g.dot(_g).sqrt();                                    // linalg.vector_norm passes an unrooted Scalar (see Scalars)
        var finite = norm.isfinite();                                   // bool scalar
        var ok = finite.to(_g.dtype);
        var frozen = finite.logical_not().to(_g.dtype);                 // 1 - ok
        // scale = min(1, clip / (norm + 1e-6)) when finite, else 0; NaN gradients become 0 below
        var scale = _o.GradClip > 0 ? norm.Plus(1e-6).reciprocal().Times(_o.GradClip).clamp_max(Scalars.Of(1.0)) : ones_like(norm);
        scale = where(finite, scale, zeros_like(scale));
        _g.nan_to_num_(0, 0, 0).mul_(scale);

        _step.PlusInPlace(finite.to(ScalarType.Float64));
        _firstBad.copy_(where(finite.logical_not().logical_and(_firstBad.lt(Scalars.Of(0L))), tensor((long)step, ScalarType.Int64, _firstBad.device), _firstBad));
        // moments frozen when not finite: beta_eff = beta·ok + (1 - ok), 1 - beta_eff = (1 - beta)·ok
        var b1 = ok.Times(_o.Beta1).PlusInPlace(frozen);
        var b2 = ok.Times(_o.Beta2).PlusInPlace(frozen);
        _m.mul_(b1).addcmul_(_g, ok.Times(1 - _o.Beta1), Scalars.One);
        _v.mul_(b2).addcmul_(_g, _g.mul(ok.Times(1 - _o.Beta2)), Scalars.One);
        var t = _step.clamp_min(Scalars.Of(1.0));
        var bc1 = pow(tensor(_o.Beta1), t).to(_g.dtype).neg_().PlusInPlace(1.0);   // 1 - beta1^t
        var bc2 = pow(tensor(_o.Beta2), t).to(_g.dtype).neg_().PlusInPlace(1.0);
        var lrEff = ok.mul(lrScalar);

        var master = _flat.Master;
        if (_o.WeightDecay > 0 && _flat.DecayCount > 0)
            master.narrow(0, 0, _flat.DecayCount).mul_(lrEff.Times(-_o.WeightDecay).PlusInPlace(1.0));
        var denom = _v.div(bc2).sqrt_().PlusInPlace(_o.Eps);
        master.sub_(_m.div(denom).mul_(lrEff.div(bc1)));
        _flat.PublishMaster();
        return norm.MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        _m.Dispose(); _v.Dispose(); _step.Dispose(); _firstBad.Dispose();
        if (!ReferenceEquals(_g, _flat.Grads)) _g.Dispose();   // the FusedAdamW belongs to the trainer's KernelSelection
    }
}
