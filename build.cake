// Build script for NATTEN.Net. Cake runs as a local dotnet tool (.config/dotnet-tools.json):
//   dotnet tool restore
//   dotnet cake --target=CI          (Build + Test; also Clean, Build, Test, Pack, Sample, Profile)
//   dotnet cake --target=Test --configuration=Debug
// Each target runs the same dotnet command the README gives, so the script adds no behaviour of its own.

var target = Argument("target", "CI");
var configuration = Argument("configuration", "Release");

const string Solution = "NATTEN.Net.sln";
const string Library = "Bindings/NATTEN.Net.csproj";
const string Cli = "Perf/NATTEN.Cli/NATTEN.Cli.csproj";
var packages = Directory("artifacts/packages");

Task("Clean")
    .Description("dotnet clean, and delete artifacts/ and Tests/TestResults/.")
    .Does(() =>
{
    DotNetClean(Solution, new DotNetCleanSettings { Configuration = configuration });
    foreach (var folder in new[] { "artifacts", "Tests/TestResults" })
    {
        if (DirectoryExists(folder))
        {
            DeleteDirectory(folder, new DeleteDirectorySettings { Recursive = true, Force = true });
        }
    }
});

Task("Build")
    .Description("dotnet build NATTEN.Net.sln (warnings are errors).")
    .Does(() =>
{
    DotNetBuild(Solution, new DotNetBuildSettings { Configuration = configuration });
});

Task("Test")
    .Description("dotnet test NATTEN.Net.sln; results in Tests/TestResults/results.trx.")
    .Does(() =>
{
    DotNetTest(Solution, new DotNetTestSettings { Configuration = configuration });
});

Task("Pack")
    .Description("dotnet pack the NATTEN.Net library into artifacts/packages.")
    .Does(() =>
{
    DotNetPack(Library, new DotNetPackSettings
    {
        Configuration = configuration,
        OutputDirectory = packages,
    });
});

Task("Sample")
    .Description("Pack, then run samples/VisionBlock against the NATTEN.Net package in artifacts/packages.")
    .IsDependentOn("Pack")
    .Does(() =>
{
    // samples/nuget.config extracts packages into artifacts/sample-packages; drop the NATTEN.Net extracted
    // there before, so the package just packed is the one the sample runs (its version does not change).
    var extracted = "artifacts/sample-packages/natten.net";
    if (DirectoryExists(extracted))
    {
        DeleteDirectory(extracted, new DeleteDirectorySettings { Recursive = true, Force = true });
    }

    DotNetRun("samples/VisionBlock/VisionBlock.csproj", new ProcessArgumentBuilder(), new DotNetRunSettings { Configuration = configuration });
});

Task("Profile")
    .Description("natten profile: time every backend on the profile problems.")
    .Does(() =>
{
    DotNetRun(Cli, new ProcessArgumentBuilder().Append("profile"), new DotNetRunSettings { Configuration = configuration });
});

Task("CI")
    .Description("Build, then Test.")
    .IsDependentOn("Build")
    .IsDependentOn("Test");

RunTarget(target);
