namespace Natten.Cli;

/// <summary>
/// A one-line text progress bar, <c>[#######.......] 3/8 label</c>, redrawn in place with a carriage
/// return. It goes to stderr so stdout stays a clean table or JSON lines.
/// </summary>
internal sealed class ProgressBar(TextWriter writer, int total, int width = 30)
{
    private int _lastLength;

    /// <summary>Draws the bar with <paramref name="done"/> of the total finished and what runs next.</summary>
    public void Report(int done, string label)
    {
        var filled = total == 0 ? width : (int)((long)width * done / total);
        var text = $"[{new string('#', filled)}{new string('.', width - filled)}] {done}/{total} {label}";
        writer.Write('\r' + text.PadRight(_lastLength));
        _lastLength = text.Length;
        writer.Flush();
    }

    /// <summary>Draws the full bar and ends the line.</summary>
    public void Finish(string label)
    {
        Report(total, label);
        writer.WriteLine();
    }
}
