using Natten.Codegen;

// Usage: natten-codegen [repository root]   (default: the current directory)
var root = args.Length > 0 ? args[0] : Directory.GetCurrentDirectory();
if (!File.Exists(Path.Combine(root, "NATTEN.Net.sln")))
{
    Console.Error.WriteLine($"{Path.GetFullPath(root)} is not the repository root (no NATTEN.Net.sln).");
    return 1;
}

foreach (var path in FnaRegisterKernelGenerator.WriteAll(root).Concat(FnaRegisterBackwardGenerator.WriteAll(root)).Concat(FnaRegisterRegistryGenerator.WriteAll(root)).Concat(BlockSparseRegisterGenerator.WriteAll(root)))
{
    Console.WriteLine($"wrote {Path.GetRelativePath(root, path)}");
}

return 0;
