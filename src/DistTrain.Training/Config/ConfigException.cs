namespace DistTrain.Training.Config;

/// <summary>A config problem, named by file and key, with what to change.</summary>
public sealed class ConfigException(string message) : Exception(message);
