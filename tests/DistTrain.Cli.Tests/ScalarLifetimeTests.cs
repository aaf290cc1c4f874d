using System.Reflection;
using System.Reflection.Emit;
using System.Runtime.Loader;

namespace DistTrain.Cli.Tests;

/// <summary>
/// TorchSharp frees a Scalar (and an implicitly converted Tensor) in its finalizer and does not keep it
/// reachable during the native call that reads it, so a GC started by another thread mid-call frees it
/// under libtorch ("Unknown scalar type", issue 13). This scan of the IL of every DistTrain assembly
/// fails on any call that makes such a temporary: an implicit conversion to Scalar or Tensor, a
/// ToScalar outside DistTrain.Model.Scalars, or a TorchSharp method that makes one inside (Tensor.add(Tensor)
/// passes alpha = 1, linalg.vector_norm its ord, ...), found by following TorchSharp's own IL.
/// </summary>
public sealed class ScalarLifetimeTests
{
    const string Allowed = "DistTrain.Model.Scalars";

    [Fact]
    public void NoDistTrainCodePassesAnUnrootedScalarToLibtorch()
    {
        var (context, bin) = Context();
        try
        {
            var ours = Directory.GetFiles(bin, "DistTrain.*.dll").Append(Path.Combine(bin, "disttrain.dll"))
                .Select(context.LoadFromAssemblyPath).ToList();
            Assert.Contains(ours, a => a.GetName().Name == "DistTrain.Model");
            var scan = new IlScan();
            var offences = new List<string>();
            int methods = 0;
            foreach (var assembly in ours)
                foreach (var type in assembly.GetTypes())
                    foreach (var method in IlScan.DeclaredMethods(type))
                    {
                        methods++;
                        if (type.FullName!.StartsWith(Allowed)) continue;
                        foreach (var callee in scan.Calls(method))
                            if (IlScan.MakesScalar(callee) || (IlScan.IsTorchSharp(callee) && scan.MakesScalarInside(callee, 0)))
                                offences.Add($"{type.FullName}.{method.Name} calls {callee.DeclaringType?.Name}.{callee.Name}({string.Join(", ", callee.GetParameters().Select(p => p.ParameterType.Name))})");
                    }
            Assert.True(methods > 1000, $"only {methods} methods scanned: the DistTrain assemblies were not found in {bin}");
            Assert.True(offences.Count == 0,
                $"{offences.Count} calls pass a TorchSharp Scalar or Tensor that nothing keeps alive (use DistTrain.Model.Scalars: Of, Owned, Plus, PlusInPlace, Times):\n" +
                string.Join("\n", offences.Distinct()));
        }
        finally { context.Unload(); }
    }

    [Fact]
    public void TheScanSeesTheImplicitAlphaInsideTensorAdd()
    {
        var (context, _) = Context();
        try
        {
            var tensor = context.LoadFromAssemblyName(new AssemblyName("TorchSharp")).GetType("TorchSharp.torch+Tensor")!;
            var scan = new IlScan();
            // `a + b` reaches Scalar.op_Implicit(int) inside Tensor.add; mul(Scalar) makes none
            Assert.True(scan.MakesScalarInside(tensor.GetMethod("op_Addition", [tensor, tensor])!, 0));
            Assert.False(scan.MakesScalarInside(tensor.GetMethods().Single(m => m.Name == "mul" && m.GetParameters() is [{ ParameterType.Name: "Scalar" }]), 0));
        }
        finally { context.Unload(); }
    }

    /// <summary>The assemblies of the built disttrain, in a context of their own (this test project does not reference them).</summary>
    static (AssemblyLoadContext Context, string Bin) Context()
    {
        var configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name;
        var bin = Path.Combine(Disttrain.RepoRoot, "src", "DistTrain.Cli", "bin", configuration, "net10.0");
        var context = new AssemblyLoadContext("scalar-scan", isCollectible: true);
        context.Resolving += (ctx, name) => File.Exists(Path.Combine(bin, name.Name + ".dll")) ? ctx.LoadFromAssemblyPath(Path.Combine(bin, name.Name + ".dll")) : null;
        return (context, bin);
    }
}

/// <summary>The call targets in a method's IL (call, callvirt, newobj, ldftn), and which TorchSharp methods make a Scalar.</summary>
sealed class IlScan
{
    static readonly OpCode[] OneByte = new OpCode[256], TwoByte = new OpCode[256];
    readonly Dictionary<MethodBase, bool> _inside = [];

    static IlScan()
    {
        foreach (var field in typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static))
        {
            var op = (OpCode)field.GetValue(null)!;
            if (op.Size == 1) OneByte[(byte)op.Value] = op; else TwoByte[(byte)(op.Value & 0xff)] = op;
        }
    }

    public static IEnumerable<MethodBase> DeclaredMethods(Type type)
    {
        const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        return type.GetMethods(all).Cast<MethodBase>().Concat(type.GetConstructors(all));
    }

    public static bool IsTorchSharp(MethodBase m) => m.Module.Assembly.GetName().Name == "TorchSharp";

    /// <summary>An implicit Scalar or Tensor, or a Scalar made from a number.</summary>
    public static bool MakesScalar(MethodBase m) => m.DeclaringType?.FullName switch
    {
        "TorchSharp.Scalar" or "TorchSharp.torch+Tensor" => m.Name == "op_Implicit",
        "TorchSharp.ScalarExtensionMethods" => m.Name == "ToScalar",
        _ => false,
    };

    /// <summary>Whether a TorchSharp method makes a Scalar itself, following its calls into TorchSharp a few levels deep.</summary>
    public bool MakesScalarInside(MethodBase method, int depth)
    {
        if (_inside.TryGetValue(method, out var known)) return known;
        _inside[method] = false;   // cycles
        bool makes = depth < 6 && Calls(method).Any(c => MakesScalar(c) || (IsTorchSharp(c) && MakesScalarInside(c, depth + 1)));
        return _inside[method] = makes;
    }

    public IEnumerable<MethodBase> Calls(MethodBase method)
    {
        byte[]? il;
        try { il = method.GetMethodBody()?.GetILAsByteArray(); }
        catch (Exception e) when (e is FileNotFoundException or TypeLoadException or BadImageFormatException) { yield break; }
        if (il is null) yield break;
        var typeArgs = method.DeclaringType is { IsGenericType: true } t ? t.GetGenericArguments() : null;
        var methodArgs = method.IsGenericMethod ? method.GetGenericArguments() : null;
        for (int i = 0; i < il.Length;)
        {
            var op = il[i] == 0xFE ? TwoByte[il[i + 1]] : OneByte[il[i]];
            i += op.Size;
            if (op == OpCodes.Call || op == OpCodes.Callvirt || op == OpCodes.Newobj || op == OpCodes.Ldftn)
            {
                MethodBase? target = null;
                try { target = method.Module.ResolveMethod(BitConverter.ToInt32(il, i), typeArgs, methodArgs); }
                catch (Exception e) when (e is ArgumentException or TypeLoadException or FileNotFoundException or MissingMethodException) { }
                if (target is not null) yield return target;
            }
            i += op.OperandType switch
            {
                OperandType.InlineNone => 0,
                OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                OperandType.InlineVar => 2,
                OperandType.InlineI8 or OperandType.InlineR => 8,
                OperandType.InlineSwitch => 4 + 4 * BitConverter.ToInt32(il, i),
                _ => 4,
            };
        }
    }
}
