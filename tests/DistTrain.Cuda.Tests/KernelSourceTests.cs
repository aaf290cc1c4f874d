using System.Text.RegularExpressions;
using DistTrain.Cuda.Ops.Mix;
using DistTrain.Cuda.Ops.QkRotary;
using DistTrain.Cuda.Ops.RmsNorm;
using static TorchSharp.torch;

namespace DistTrain.Cuda.Tests;

/// <summary>What can be checked of the CUDA sources without a GPU: embedded, the kernels the C# launches exist, NVRTC-safe.</summary>
public partial class KernelSourceTests
{
    [GeneratedRegex(@"extern ""C"" __global__ void (?:__launch_bounds__\([^)]*\) )?(\w+)\(")]
    private static partial Regex Kernel();

    [Theory]
    [InlineData("rmsnorm.cu", new[] { "rmsnorm_forward_f32", "rmsnorm_forward_bf16", "rmsnorm_backward_f32", "rmsnorm_backward_bf16", "rmsnorm_dw_reduce_f32", "rmsnorm_dw_reduce_bf16", "rmsnorm_forward_rows_bf16", "rmsnorm_backward_rows_bf16", "rmsnorm_forward_rows_sets_bf16", "rmsnorm_backward_rows_sets_bf16", "rmsnorm_dw_reduce_sets_bf16" })]
    [InlineData("adamw.cu", new[] { "adamw_norm_f32", "adamw_norm_bf16", "adamw_update_f32", "adamw_update_bf16" })]
    [InlineData("swiglu.cu", new[] { "swiglu_forward_f32", "swiglu_forward_bf16", "swiglu_backward_f32", "swiglu_backward_bf16" })]
    [InlineData("qkrotary.cu", new[] { "qkrotary_forward_f32", "qkrotary_forward_bf16", "qkrotary_backward_f32", "qkrotary_backward_bf16", "qkrotary_forward_f32_v", "qkrotary_forward_bf16_v", "qkrotary_backward_f32_v", "qkrotary_backward_bf16_v", "qkrotary_forward_pair_bf16_v", "qkrotary_backward_pair_bf16_v" })]
    [InlineData("mix.cu", new[] { "mix_forward_f32", "mix_forward_f32_v", "mix_forward_bf16", "mix_forward_bf16_v", "mix_backward_f32", "mix_backward_f32_v", "mix_backward_bf16", "mix_backward_bf16_v", "mix_backward_p_f32", "mix_backward_p_f32_v", "mix_backward_p_bf16", "mix_backward_p_bf16_v", "mix_bias_grad_f32", "mix_bias_grad_bf16" })]
    [InlineData("crossentropy.cu", new[] { "cross_entropy_rows_f32", "cross_entropy_rows_bf16", "cross_entropy_scale_f32", "cross_entropy_scale_bf16" })]
    public void EverySourceIsEmbeddedWithTheKernelsItsOpLaunches(string resource, string[] kernels)
    {
        var source = KernelModule.Source(resource);
        Assert.Equal(kernels.Order(), Kernel().Matches(source).Select(m => m.Groups[1].Value).Order());
        // NVRTC 13 has no host headers and no cuda_bf16.h: the sources include nothing
        Assert.DoesNotContain("#include", source);
        Assert.DoesNotContain("std::", source);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(64)]
    [InlineData(256)]
    [InlineData(257)]
    [InlineData(1000)]
    [InlineData(1024)]
    [InlineData(4096)]
    [InlineData(FusedRmsNorm.MaxDim)]
    public void TheRmsNormLayoutCoversTheRowWithinOneBlock(int d)
    {
        var (tpr, rpb) = FusedRmsNorm.Layout(d);
        Assert.True(tpr % 32 == 0 && tpr <= 1024, $"{tpr} threads per row");
        Assert.True(tpr * 8 >= d, "each thread owns at most MAXC = 8 columns");
        Assert.True(tpr * rpb <= 1024 && tpr * rpb / 32 <= 32, "a block fits, and its warps fit red[32]");
        Assert.True(tpr * rpb >= Math.Min(256, tpr), "at least 256 threads a block when rows are narrow");
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(7, 1)]
    [InlineData(1001, 1)]
    [InlineData(1024, 1)]
    [InlineData(16, 8)]
    [InlineData(1000, 4)]
    [InlineData(1024, 8)]
    [InlineData(2048, 8)]
    public void TheMixLayoutGivesEveryThreadOneChunkWithinItsLaunchBounds(int d, int v)
    {
        var (tpt, tpb) = FusedMix.Layout(d, v);
        int bound = v == 1 ? FusedMix.MaxThreadsPerToken : FusedMix.MaxVectorThreadsPerToken;
        Assert.True(tpt % 32 == 0 && tpt * v >= d && (tpt - 32) * v < d, $"{tpt} threads a token for {d} columns in chunks of {v}");
        Assert.True(tpt * tpb <= bound && tpt * tpb >= Math.Min(256, tpt), $"{tpt} x {tpb} threads a block, bound {bound}");
    }

    [Fact]
    public void TheMixTableMatchesTheKernelParameter()
    {
        // MixTable<T> in mix.cu: h[64], gh[64], g[4], out[4] pointers; LaunchWithTable passes that many 8-byte slots
        var source = KernelModule.Source("mix.cu");
        Assert.Contains($"#define MIX_MAX_INPUTS {FusedMix.MaxInputs}", source);
        Assert.Contains($"#define MIX_MAX_STREAMS {FusedMix.MaxStreams}", source);
        Assert.Contains("long long ws[2], w2s[2], gws[2];\n  const T* b;", source);   // six stride slots, then the two biases
        Assert.Contains("const T* b2;", source);
        Assert.Equal(2 * FusedMix.MaxInputs + 3 * FusedMix.MaxStreams + 8, FusedMix.TableSlots);
        // mix_bias_grad: groups of C·L threads (a column of the bias each), at least one group for the most a mix has
        Assert.Contains($"#define MIX_BIAS_BLOCK {FusedMix.BiasBlock} ", source);
        Assert.True(FusedMix.MaxInputs * FusedMix.MaxStreams <= FusedMix.BiasBlock);
        Assert.True(FusedMix.TableSlots * 8 + 64 <= 4096, "the table and the other parameters fit CUDA's 4 KB");
    }

    [Fact]
    public void MuddFormersWeightViewIsReadInPlaceAndOtherLayoutsAreCopied()
    {
        // the dynamic-dense output (B, T, C·L) seen as (C, B, T, L): strides over (stream, token) = (L, C·L)
        using var raw = zeros(2, 5, 4 * 7);
        using var view = raw.view(2, 5, 4, 7).permute(2, 0, 1, 3);
        Assert.Equal((7L, 28L), FusedMix.TokenStrides(view));
        using var contiguous = zeros(4, 2, 5, 7);
        Assert.Equal((70L, 7L), FusedMix.TokenStrides(contiguous));
        using var expanded = zeros(1, 1, 1, 7).expand(1, 2, 5, 7);   // DenseFormer's α for every token: stride 0 over the tokens
        Assert.Null(FusedMix.TokenStrides(expanded));
        using var swapped = zeros(4, 5, 2, 7).transpose(1, 2);       // B and T not one token index
        Assert.Null(FusedMix.TokenStrides(swapped));
    }

    [Fact]
    public void AMixBiasHasOneValueAStreamAndHidden()
    {
        using var dense = zeros(4, 7);   // MUDDFormer's dense_bs.{i}: (C, L)
        Assert.True(FusedMix.BiasShaped(dense, 4, 7));
        Assert.False(FusedMix.BiasShaped(dense, 4, 6));
        Assert.False(FusedMix.BiasShaped(dense, 1, 7));
        using var alpha = zeros(7);      // DenseFormer's α: one stream
        Assert.True(FusedMix.BiasShaped(alpha, 1, 7));
        Assert.False(FusedMix.BiasShaped(alpha, 4, 7));
    }

    [Fact]
    public void TensorsBackToBackInMemoryAreOneBatchedViewAndOthersAreNot()
    {
        using var flat = arange(3 * 4 * 5, ScalarType.Float32).view(3, 4, 5);
        using var a = flat[0];
        using var b = flat[1];
        using var c = flat[2];
        using var batched = DistTrain.Cuda.Ops.QkRotary.QkvRotaryFunction.BackToBack([a, b, c]);
        Assert.NotNull(batched);
        Assert.True(batched!.eq(flat).all().item<bool>());
        Assert.Equal(DistTrain.Model.TensorMemory.Address(a), DistTrain.Model.TensorMemory.Address(batched));
        Assert.Null(DistTrain.Cuda.Ops.QkRotary.QkvRotaryFunction.BackToBack([a, c, b]));   // out of order
        using var other = zeros(4, 5);
        Assert.Null(DistTrain.Cuda.Ops.QkRotary.QkvRotaryFunction.BackToBack([a, b, other]));
        Assert.Null(DistTrain.Cuda.Ops.QkRotary.QkvRotaryFunction.BackToBack([a, b, null]));   // a weight without .grad
        using var offset = arange(2 + 2 * 4 * 5, ScalarType.Float32)[2..].view(2, 4, 5);       // a storage offset is kept
        using var o0 = offset[0];
        using var o1 = offset[1];
        using var fromOffset = DistTrain.Cuda.Ops.QkRotary.QkvRotaryFunction.BackToBack([o0, o1]);
        Assert.True(fromOffset!.eq(offset).all().item<bool>());
    }

    [Fact]
    public void TheBatchedProductIsAddedToTheThirdOperand()
    {
        using var a = arange(2 * 3 * 4, ScalarType.Float64).view(2, 3, 4);
        using var b = arange(2 * 4 * 5, ScalarType.Float64).view(2, 4, 5).div(7.0);
        using var c = arange(2 * 3 * 5, ScalarType.Float64).view(2, 3, 5).neg();
        using var expected = c + bmm(a, b);
        using var got = DistTrain.Cuda.Ops.QkRotary.QkvRotaryFunction.AddBatchedProduct(c, a, b);
        Assert.True(got.allclose(expected));
    }

    [Fact]
    public void TheQkRotaryBlockMatchesTheKernelsSharedRows()
    {
        // the _v backward sums its warps' dw rows in shared memory sized for QKR_WARPS warps of at most QKR_MAX_D columns
        var source = KernelModule.Source("qkrotary.cu");
        Assert.Contains($"#define QKR_WARPS {FusedQkRotary.RowsPerBlock} ", source);
        Assert.Contains("#define QKR_MAX_D 256 ", source);   // Grouped: d/2 = 4 lanes' pairs x at most 32 lanes
    }

    [Fact]
    public void TheNormSetsMatchTheKernelParameter()
    {
        // NormSets in rmsnorm.cu: six arrays of NORM_SETS pointers, as FusedRmsNorm fills the table; pick() reads three
        var source = KernelModule.Source("rmsnorm.cu");
        Assert.Contains($"#define NORM_SETS {FusedRmsNorm.MaxSets}", source);
        Assert.Equal(3, FusedRmsNorm.MaxSets);
    }
}
