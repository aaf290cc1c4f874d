using DistTrain.Model.Inference;
using DistTrain.Model.Kernels;
using DistTrain.Model.Layers;
using TorchSharp;
using TorchSharp.Utils;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DistTrain.Model;

/// <summary>
/// Decoder-only language model: tokens (B, T) -> logits (B, T, V), or straight to the loss (<see cref="Loss"/>). Parameter names follow the
/// official MUDDFormer code (tok_embeddings, layers.{i}..., dense_bs.{i}, dynamic_dense.{i}.w1/w2,
/// norm, output). Single-device: it knows nothing of ranks, buffers or optimizers.
/// </summary>
public sealed class LanguageModel : nn.Module<Tensor, Tensor>
{
    readonly ModelConfig _config;
    [ComponentName(Name = "tok_embeddings")] readonly Embedding _tokEmbeddings;
    [ComponentName(Name = "layers")] readonly ModuleList<TransformerBlock> _layers;
    [ComponentName(Name = "norm")] readonly RmsNorm _norm;
    [ComponentName(Name = "output")] readonly Linear _output;
    [ComponentName(Name = "dense_bs")] readonly ParameterList? _denseBs;
    [ComponentName(Name = "dynamic_dense")] readonly ModuleList<MultiwayDynamicDense>? _dynamicDense;
    [ComponentName(Name = "dwa")] readonly DepthWeightedAverages? _dwa;
    Tensor? _cos, _sin;

    public LanguageModel(ModelConfig config) : base(nameof(LanguageModel))
    {
        _config = config;
        _tokEmbeddings = nn.Embedding(config.VocabSize, config.Dim);
        _layers = new ModuleList<TransformerBlock>(Enumerable.Range(0, config.NLayer).Select(i => new TransformerBlock(config, i)).ToArray());
        _norm = new RmsNorm(config.Dim, config.NormEps);
        _output = nn.Linear(config.Dim, config.VocabSize, hasBias: false);
        if (config.Arch == Architecture.MUDDFormer)
        {
            _dynamicDense = new ModuleList<MultiwayDynamicDense>(Enumerable.Range(0, config.NLayer).Select(i => new MultiwayDynamicDense(config, i)).ToArray());
            _denseBs = new ParameterList();
            for (int i = 0; i < config.NLayer; i++)
                _denseBs.Add(nn.Parameter(zeros(config.Streams(i), i + 2)));
        }
        if (config.Arch == Architecture.DenseFormer)
            _dwa = new DepthWeightedAverages(config);
        RegisterComponents();
        Initializer.Apply(this, config);
    }

    public ModelConfig Config => _config;

    /// <summary>Which layers recompute their activations in backward, and how (set from outside: the trainer's config).</summary>
    public ActivationCheckpointing Checkpointing { get; set; } = ActivationCheckpointing.Off;

    /// <summary>Which implementation of the memory-bound ops runs (set from outside: the trainer's train.kernels); reference by default.</summary>
    public IKernels Kernels
    {
        get => _kernels;
        set
        {
            _kernels = value;
            foreach (var (_, module) in named_modules())
                if (module is IUsesKernels user) user.Kernels = value;
        }
    }
    IKernels _kernels = ReferenceKernels.Instance;

    public override Tensor forward(Tensor tokens)
    {
        using var scope = NewDisposeScope();
        return Projection.Apply(Hidden(tokens), _output.weight!).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Inference: tokens (B, T) at positions cache.Length.. -> their logits (B, T, V); the cache gets their
    /// keys and values. Equals the last T positions of <see cref="forward(Tensor)"/> over the whole sequence,
    /// up to float rounding. Activation checkpointing does not apply (run it under no_grad).
    /// </summary>
    public Tensor forward(Tensor tokens, KvCache cache)
    {
        using var scope = NewDisposeScope();
        return _output.forward(Hidden(tokens, cache)).MoveToOuterDisposeScope();
    }

    /// <summary>The final normed hidden states (B, T, D): what the output projection reads. With a cache, see <see cref="forward(Tensor, KvCache)"/>.</summary>
    public Tensor Hidden(Tensor tokens, KvCache? cache = null)
    {
        using var scope = NewDisposeScope();
        long start = cache?.Length ?? 0, t = tokens.shape[1];
        cache?.Reserve(t);
        var (cos, sin) = RotaryTables(start, t, tokens.device);
        var policy = cache is null ? Checkpointing : ActivationCheckpointing.Off;
        var x = _tokEmbeddings.forward(tokens);
        var final = _config.Arch switch
        {
            Architecture.MUDDFormer => new Residual(ForwardMudd(x, cos, sin, policy, cache)),
            Architecture.DenseFormer => new Residual(ForwardDenseFormer(x, cos, sin, policy, cache)),
            _ => ForwardResidual(x, cos, sin, policy, cache),
        };
        cache?.Advance(t);
        return _norm.Forward(final).Normed.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Mean next-token cross-entropy (fp32 scalar) of tokens (B, T) against targets (B, T), with the
    /// output projection fused into the loss <paramref name="chunkRows"/> tokens at a time: the
    /// (B·T, V) logits never exist at once (<see cref="ChunkedCrossEntropy"/>). Equals
    /// cross_entropy(forward(tokens).float(), targets) up to float rounding, gradients included.
    /// </summary>
    public Tensor Loss(Tensor tokens, Tensor targets, long chunkRows)
    {
        using var scope = NewDisposeScope();   // nothing saves the hidden (the loss keeps its gradient): its handle ends here
        return ChunkedCrossEntropy.Loss(Hidden(tokens), _output.weight!, targets, chunkRows, _kernels).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Transformer++: without dense connections the block and mudd policies are the same. A block's output add is left to
    /// the next block's first norm (or the final norm), except around a recomputed block, whose region keeps one tensor.
    /// </summary>
    Residual ForwardResidual(Tensor embedded, Tensor cos, Tensor sin, ActivationCheckpointing policy, KvCache? cache)
    {
        var x = new Residual(embedded);
        for (int i = 0; i < _layers.Count; i++)
        {
            var layer = _layers[i];
            var next = policy.Covers(i, _layers.Count) ? new Residual(Recomputed((h, c, s, value) => layer.Forward(h[0], c, s, valueNeeded: value), [x.Sum()], cos, sin)) : layer.Forward(x, cos, sin, cache?[i]);
            x.B?.Dispose();   // the FFN output's one use was that add: freed now, not when the forward's scope ends (a hidden-sized tensor per layer)
            x = next;
        }
        return x;
    }

    /// <summary>
    /// hiddens: the embedding and every block output so far. Block i reads the depth-weighted
    /// average after block i-1 (dwa.{i-1}; the plain output where the period skips it). With the
    /// mudd policy the average is recomputed inside the checkpointed region, so only hiddens are kept.
    /// </summary>
    Tensor ForwardDenseFormer(Tensor x, Tensor cos, Tensor sin, ActivationCheckpointing policy, KvCache? cache)
    {
        var hiddens = new List<Tensor> { x };
        for (int i = 0; i < _layers.Count; i++)
        {
            var layer = _layers[i];
            Tensor Average(IReadOnlyList<Tensor> h) => h.Count == 1 ? h[0] : _dwa!.TryGet(h.Count - 2, out var dwa) ? dwa.Forward(h) : h[^1];
            Tensor output;
            if (!policy.Covers(i, _layers.Count)) output = layer.Forward(Average(hiddens), cos, sin, cache?[i]);
            else if (policy.Kind == CheckpointKind.Block) output = Recomputed((h, c, s, value) => layer.Forward(h[0], c, s, valueNeeded: value), [Average(hiddens)], cos, sin);
            else output = Recomputed((h, c, s, value) => layer.Forward(Average(h), c, s, valueNeeded: value), [.. hiddens], cos, sin);
            hiddens.Add(output);
        }
        return _dwa!.TryGet(_layers.Count - 1, out var last) ? last.Forward(hiddens) : hiddens[^1];
    }

    /// <summary>
    /// hiddens: the embedding and every layer output so far (each (B, T, D)); after layer i the
    /// dynamic weights dw (C, B, T, i+2) plus the static dense_bs.{i} (C, i+2) mix them into the
    /// next layer's Q, K, V, R inputs, and into one stream after the last layer. With the mudd
    /// policy, layer i's region starts from the hiddens: the weights and the mixing after layer
    /// i-1 are recomputed in backward, so the four mixed streams are never kept. The mixes of this
    /// pass, recomputed ones included, share one set of gradient buffers for the hiddens.
    /// </summary>
    Tensor ForwardMudd(Tensor x, Tensor cos, Tensor sin, ActivationCheckpointing policy, KvCache? cache)
    {
        var gradients = new HiddenGradients();
        Tensor[] Mix(int after, IReadOnlyList<Tensor> h, Tensor? normed = null) => MixAfter(after, h, normed, gradients);
        var hiddens = new List<Tensor> { x };
        Tensor? normedLast = null;   // the dynamic-dense norm of hiddens[^1], where the block's output add computed it
        for (int i = 0; i < _layers.Count; i++)
        {
            int layer = i;
            var kv = cache?[layer];
            Residual Block(Tensor[] s, Tensor c, Tensor n) => s.Length == 1 ? _layers[layer].Forward(new Residual(s[0]), c, n, kv) : _layers[layer].Forward(s[0], s[1], s[2], s[3], c, n, kv);
            // a recomputed block ends in its output's add inside the FFN's last GEMM, which backward's re-run skips
            Tensor Summed(Tensor[] s, Tensor c, Tensor n, bool value) =>
                s.Length == 1 ? _layers[layer].Forward(s[0], c, n, valueNeeded: value) : _layers[layer].ForwardSum(s[0], s[1], s[2], s[3], c, n, value);
            if (policy.Covers(i, _layers.Count))
            {
                var output = policy.Kind == CheckpointKind.Mudd
                    ? Recomputed((h, c, n, value) => Summed(layer == 0 ? h : Mix(layer - 1, h), c, n, value), [.. hiddens], cos, sin)
                    : Recomputed((s, c, n, value) => Summed(s, c, n, value), i == 0 ? [x] : Mix(i - 1, hiddens, normedLast), cos, sin);
                hiddens.Add(output);
                normedLast = null;
            }
            else
            {
                // the block's output add and the dynamic-dense norm of its sum in one pass
                var output = Block(i == 0 ? [x] : Mix(i - 1, hiddens, normedLast), cos, sin);
                var (sum, normed) = output.B is null ? (output.A, (Tensor?)null) : _dynamicDense![i].AddNorm(output.A, output.B);
                output.B?.Dispose();   // the FFN output's one use was that add: freed now, not when the forward's scope ends
                hiddens.Add(sum);
                normedLast = normed;
            }
        }
        return Mix(_layers.Count - 1, hiddens, normedLast)[0];
    }

    /// <summary>A checkpointed region over <paramref name="inputs"/>; the rotary tables travel as inputs so that they outlive this forward's scope.</summary>
    static Tensor Recomputed(Func<Tensor[], Tensor, Tensor, bool, Tensor> region, Tensor[] inputs, Tensor cos, Tensor sin) =>
        Recompute.Run((all, value) => region(all[..^2], all[^2], all[^1], value), [.. inputs, cos, sin]);

    /// <summary>
    /// The streams after layer i: hiddens h_0..h_{i+1} mixed by dynamic_dense.{i}(h_{i+1}) + dense_bs.{i}; normed: the
    /// dynamic-dense norm of h_{i+1} when it was computed already (null: computed here).
    /// </summary>
    Tensor[] MixAfter(int i, IReadOnlyList<Tensor> hiddens, Tensor? normed, HiddenGradients gradients)
    {
        using var scope = NewDisposeScope();
        var dense = _dynamicDense![i];
        var dw = normed is null ? dense.forward(hiddens[^1]) : dense.FromNormed(normed);   // (C, B, T, L)
        return _kernels.Mix(hiddens, dw, _denseBs![i], gradients).Select(t => t.MoveToOuterDisposeScope()).ToArray();
    }

    /// <summary>The rotary tables of positions start..start+seqLen-1.</summary>
    (Tensor Cos, Tensor Sin) RotaryTables(long start, long seqLen, Device device)
    {
        if (start + seqLen > _config.BlockSize)
            throw new ArgumentException($"sequence length {start + seqLen} exceeds block_size {_config.BlockSize}; raise model.block_size or lower train.seq_len");
        // Device has no value equality: compare type and index, or the table is rebuilt (and copied to the GPU) every step
        if (_cos is null || _cos.device_type != device.type || _cos.device_index != device.index)
        {
            _cos?.Dispose(); _sin?.Dispose();
            (_cos, _sin) = Rotary.Tables(_config.BlockSize, _config.HeadDim, _config.RopeBase, device, _config.RotaryPrecision);
            _cos.DetachFromDisposeScope();   // cached across steps: not owned by the caller's scope
            _sin.DetachFromDisposeScope();
        }
        return (_cos.narrow(0, start, seqLen), _sin!.narrow(0, start, seqLen));
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) { _cos?.Dispose(); _sin?.Dispose(); }
        base.Dispose(disposing);
    }
}
