using TorchSharp;
using static TorchSharp.torch;

namespace DistTrain.Training.Optim;

/// <summary>
/// AdamW (decoupled weight decay) over the flat fp32 master, with global-norm gradient clipping.
/// A handful of whole-buffer operations per step and no host sync: the step count, the
/// "all finite" flag and the first non-finite step live on the device. A step whose gradients
/// are not finite changes nothing (moments frozen, no update); the trainer reads
/// <see cref="FirstNonFiniteStep"/> when it logs and stops the run.
/// </summary>
public sealed class FlatAdamW : IDisposable
{
    readonly FlatParameters _flat;
    readonly Config.OptimOptions _o;
    readonly Tensor _m, _v, _g;            // fp32 (or fp64) flat
    readonly Tensor _step, _firstBad;      // 0-dim device scalars

    public FlatAdamW(FlatParameters flat, Config.OptimOptions options)
    {
        _flat = flat;
        _o = options;
        _m = zeros_like(flat.Master);
        _v = zeros_like(flat.Master);
        _g = ReferenceEquals(flat.Master, flat.Params) ? flat.Grads : zeros_like(flat.Master);
        _step = zeros([], ScalarType.Float64, flat.Master.device);
        _firstBad = full([], -1L, ScalarType.Int64, flat.Master.device);
    }

    public Tensor ExpAvg => _m;
    public Tensor ExpAvgSq => _v;

    /// <summary>The scalars a checkpoint keeps: steps with finite gradients (bias correction) and the first non-finite step. Reading syncs.</summary>
    public (double Steps, long FirstNonFinite) Scalars
    {
        get => (_step.item<double>(), _firstBad.item<long>());
        set { _step.fill_(value.Steps); _firstBad.fill_(value.FirstNonFinite); }
    }

    /// <summary>-1 while every step had finite gradients, else the first step (as passed to <see cref="Step"/>) that did not. Reading it syncs.</summary>
    public long FirstNonFiniteStep => _firstBad.item<long>();

    /// <summary>Clips, then updates the master and the compute-dtype parameters. Returns the pre-clip gradient norm (a device scalar).</summary>
    public Tensor Step(double lr, int step)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        if (!ReferenceEquals(_g, _flat.Grads)) _g.copy_(_flat.Grads);
        var norm = linalg.vector_norm(_g);
        var finite = norm.isfinite();                                   // bool scalar
        var ok = finite.to(_g.dtype);
        // scale = min(1, clip / (norm + 1e-6)) when finite, else 0; NaN gradients become 0 below
        var scale = _o.GradClip > 0 ? (_o.GradClip / (norm + 1e-6)).clamp_max(1.0) : ones_like(norm);
        scale = where(finite, scale, zeros_like(scale));
        _g.nan_to_num_(0, 0, 0).mul_(scale);

        _step.add_(finite.to(ScalarType.Float64));
        _firstBad.copy_(where(finite.logical_not().logical_and(_firstBad.lt(0)), full([], (long)step, ScalarType.Int64, _firstBad.device), _firstBad));
        // moments frozen when not finite: beta_eff = beta·ok + (1 - ok)
        var b1 = ok * _o.Beta1 + (1 - ok);
        var b2 = ok * _o.Beta2 + (1 - ok);
        _m.mul_(b1).add_(_g * (1 - b1));
        _v.mul_(b2).addcmul_(_g, _g * (1 - b2), 1);
        var t = _step.clamp_min(1);
        var bc1 = 1 - pow(_o.Beta1, t).to(_g.dtype);
        var bc2 = 1 - pow(_o.Beta2, t).to(_g.dtype);
        var lrEff = ok * lr;

        var master = _flat.Master;
        if (_o.WeightDecay > 0 && _flat.DecayCount > 0)
            master.narrow(0, 0, _flat.DecayCount).mul_(1 - lrEff * _o.WeightDecay);
        var denom = (_v / bc2).sqrt_().add_(_o.Eps);
        master.sub_(_m.div(denom).mul_(lrEff / bc1));
        _flat.PublishMaster();
        return norm.MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        _m.Dispose(); _v.Dispose(); _step.Dispose(); _firstBad.Dispose();
        if (!ReferenceEquals(_g, _flat.Grads)) _g.Dispose();
    }
}
