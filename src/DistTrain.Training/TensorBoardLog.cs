using TorchSharp.Modules;
using static TorchSharp.torch.utils;

namespace DistTrain.Training;

/// <summary>
/// The logged steps as TensorBoard scalars in RUN_DIR/tensorboard/ (train/loss, train/lr, ..., val/loss),
/// at global step = the report's step; `tensorboard --logdir runs` shows every run side by side.
/// </summary>
sealed class TensorBoardLog(string dir)
{
    // TorchSharp's writer opens, appends to and closes the event file for each scalar: a running
    // job's file is always whole and readable, and there is nothing to flush or dispose.
    readonly SummaryWriter _writer = tensorboard.SummaryWriter(dir);

    public void Append(StepReport r)
    {
        Scalar("train/loss", r.Loss, r.Step);
        Scalar("train/lr", r.Lr, r.Step);
        Scalar("train/tokens_per_s", r.TokensPerSecond, r.Step);
        Scalar("train/grad_norm", r.GradNorm, r.Step);
        Scalar("train/data_wait_s", r.DataWaitSeconds, r.Step);
        Scalar("train/step_s", r.StepSeconds, r.Step);
        if (r.ValLoss is { } val) Scalar("val/loss", val, r.Step);
    }

    void Scalar(string tag, double value, int step) => _writer.add_scalar(tag, (float)value, step);
}
