using System.Text.Json;
using System.Text.Json.Serialization;

namespace DistTrain.Training;

/// <summary>What one logged step reports (a line of metrics.jsonl).</summary>
public sealed record StepReport(
    [property: JsonPropertyName("step")] int Step,
    [property: JsonPropertyName("loss")] double Loss,
    [property: JsonPropertyName("lr")] double Lr,
    [property: JsonPropertyName("tokens")] long Tokens,
    [property: JsonPropertyName("tokens_per_s")] double TokensPerSecond,
    [property: JsonPropertyName("grad_norm")] double GradNorm,
    [property: JsonPropertyName("data_wait_s")] double DataWaitSeconds,
    [property: JsonPropertyName("step_s")] double StepSeconds,
    [property: JsonPropertyName("val_loss")] double? ValLoss = null)
{
    public static readonly JsonSerializerOptions Json = new()
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };
}

/// <summary>Receives progress from the trainer (the CLI draws a bar; tests collect reports).</summary>
public interface ITrainingObserver
{
    void OnStart(int totalSteps, string runDirectory) { }
    /// <summary>Training continues from <paramref name="checkpoint"/> at <paramref name="step"/>; <paramref name="ignoredPartial"/> are folders of interrupted saves.</summary>
    void OnResume(string checkpoint, int step, IReadOnlyList<string> ignoredPartial) { }
    void OnStep(int step) { }
    /// <summary>A checkpoint was committed: this rank wrote <paramref name="bytes"/>, and training waited <paramref name="seconds"/>.</summary>
    void OnCheckpoint(string checkpoint, long bytes, double seconds) { }
    void OnReport(StepReport report) { }
}

/// <summary>Raised when training cannot go on (non-finite loss, ...), with the step and a hint.</summary>
public sealed class TrainingException(string message) : Exception(message);
