using System.Globalization;
using System.Text;

namespace Natten.Codegen;

/// <summary>
/// What the kernel generators share: an indented text buffer (<see cref="Line"/>, <see cref="Open"/>,
/// <see cref="Close"/>) and the names of fragment registers (<see cref="C"/> for an accumulator register of an
/// 8-column n-tile, <see cref="Refs"/> for the four of one tile).
/// </summary>
public abstract class CodeWriter
{
    private readonly StringBuilder _text = new();
    private int _indent;

    /// <summary>The text written so far.</summary>
    protected string Text => _text.ToString();

    /// <summary>Accumulator register <paramref name="register"/> (0–3) of n-tile <paramref name="tile"/>.</summary>
    protected static string C(int tile, int register) => string.Create(CultureInfo.InvariantCulture, $"N{tile}C{register}");

    /// <summary>" + n" for a non-zero constant offset, nothing for 0.</summary>
    protected static string Plus(int offset) => offset == 0 ? string.Empty : string.Create(CultureInfo.InvariantCulture, $" + {offset}");

    /// <summary>The four accumulator registers of one n-tile of <paramref name="owner"/>, passed by reference.</summary>
    protected static string Refs(string owner, int tile)
        => $"ref {owner}.{C(tile, 0)}, ref {owner}.{C(tile, 1)}, ref {owner}.{C(tile, 2)}, ref {owner}.{C(tile, 3)}";

    protected void Inline() => Line("[MethodImpl(MethodImplOptions.AggressiveInlining)]");

    protected void Open()
    {
        Line("{");
        _indent++;
    }

    protected void Close()
    {
        _indent--;
        Line("}");
    }

    protected void Line(string text = "")
    {
        if (text.Length > 0)
        {
            _text.Append(' ', _indent * 4).Append(text);
        }

        _text.Append('\n');
    }
}
