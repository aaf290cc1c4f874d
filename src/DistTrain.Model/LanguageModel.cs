using DistTrain.Model.Layers;
using TorchSharp;
using TorchSharp.Utils;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DistTrain.Model;

/// <summary>
/// Decoder-only language model: tokens (B, T) -> logits (B, T, V). Parameter names follow the
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

    public override Tensor forward(Tensor tokens)
    {
        using var scope = NewDisposeScope();
        var (cos, sin) = RotaryTables(tokens.shape[1], tokens.device);
        var x = _tokEmbeddings.forward(tokens);
        var final = _config.Arch switch
        {
            Architecture.MUDDFormer => ForwardMudd(x, cos, sin),
            Architecture.DenseFormer => ForwardDenseFormer(x, cos, sin),
            _ => ForwardResidual(x, cos, sin),
        };
        return _output.forward(_norm.forward(final)).MoveToOuterDisposeScope();
    }

    Tensor ForwardResidual(Tensor x, Tensor cos, Tensor sin)
    {
        foreach (var layer in _layers) x = layer.Forward(x, cos, sin);
        return x;
    }

    Tensor ForwardDenseFormer(Tensor x, Tensor cos, Tensor sin)
    {
        var hiddens = new List<Tensor> { x };
        for (int i = 0; i < _layers.Count; i++)
        {
            hiddens.Add(_layers[i].Forward(x, cos, sin));
            x = _dwa!.TryGet(i, out var dwa) ? dwa.Forward(hiddens) : hiddens[^1];
        }
        return x;
    }

    /// <summary>
    /// hiddens: the embedding and every layer output so far (each (B, T, D)); after layer i the
    /// dynamic weights dw (C, B, T, i+2) plus the static dense_bs.{i} (C, i+2) mix them into the
    /// next layer's Q, K, V, R inputs, and into one stream after the last layer.
    /// </summary>
    Tensor ForwardMudd(Tensor x, Tensor cos, Tensor sin)
    {
        var hiddens = new List<Tensor> { x };
        Tensor[] streams = [x, x, x, x];
        for (int i = 0; i < _layers.Count; i++)
        {
            var output = i == 0
                ? _layers[i].Forward(x, cos, sin)
                : _layers[i].Forward(streams[0], streams[1], streams[2], streams[3], cos, sin);
            hiddens.Add(output);
            var dw = _dynamicDense![i].forward(output) + _denseBs![i].unsqueeze(1).unsqueeze(1);   // (C, B, T, L)
            streams = MultiwayDynamicDense.Mix(hiddens, dw);
        }
        return streams[0];
    }

    (Tensor Cos, Tensor Sin) RotaryTables(long seqLen, Device device)
    {
        if (seqLen > _config.BlockSize)
            throw new ArgumentException($"sequence length {seqLen} exceeds block_size {_config.BlockSize}; raise model.block_size or lower train.seq_len");
        // Device has no value equality: compare type and index, or the table is rebuilt (and copied to the GPU) every step
        if (_cos is null || _cos.device_type != device.type || _cos.device_index != device.index)
        {
            _cos?.Dispose(); _sin?.Dispose();
            (_cos, _sin) = Rotary.Tables(_config.BlockSize, _config.HeadDim, _config.RopeBase, device);
            _cos.DetachFromDisposeScope();   // cached across steps: not owned by the caller's scope
            _sin.DetachFromDisposeScope();
        }
        return (_cos[..(int)seqLen], _sin![..(int)seqLen]);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) { _cos?.Dispose(); _sin?.Dispose(); }
        base.Dispose(disposing);
    }
}
