"""String literals and string slicing (Rhai Book: Strings and Characters, Ranges,
Bit-Fields), with the values Rhai 1.25 gives (its tests/string.rs and tests/bit_fields.rs)."""

from __future__ import annotations

from typing import Any

import pytest

import rhai


def run(src: str) -> Any:
    return rhai.Engine().eval(src)


@pytest.mark.parametrize(
    ("src", "want"),
    [
        # raw strings: no escapes, line breaks kept, as many `#` close as opened
        ('#"Test"#', "Test"),
        ('#"Test string: \\\\u2764\\nhello,\\nworld!"#', r"Test string: \\u2764\nhello,\nworld!"),
        (
            '##"Test string: #"\\\\u2764\\nhello,\\\\nworld!"#"##',
            r'Test string: #"\\u2764\nhello,\\nworld!"#',
        ),
        ('##"hello #"# world"##', 'hello #"# world'),
        ('#""hello""#', '"hello"'),
        ('##"Test\nstring: "## + "\\u2764"', "Test\nstring: \u2764"),
        ('##"Test"\nstring: "## + "\\u2764"', 'Test"\nstring: \u2764'),
        (
            '###"In Rhai, you can write ##"hello"## as a raw string."###',
            'In Rhai, you can write ##"hello"## as a raw string.',
        ),
        # a doubled quote stands for the quote
        ('"Test string: ""\\u2764"""', 'Test string: "\u2764"'),
        ('"this is the ""last"" time"', 'this is the "last" time'),
        ('"\\"hello\\""', '"hello"'),
        ("'''' == '\\''", True),
        # a lone CR is kept, CR LF is a line break
        ('"Test\rstring: \\u2764"', "Test\rstring: \u2764"),
        # line continuation skips the next line's blanks up to the opening quote's column
        ('   "Test string: \\u2764\\\n     hello, world!"', "Test string: \u2764 hello, world!"),
        (
            'let x = "hello, world!\\\n         hello world again! \\\n         this is the end";'
            " x",
            "hello, world!hello world again! this is the end",
        ),
        # back-tick strings: a line break right after the opening back-tick is skipped,
        # a doubled back-tick is a back-tick, no escapes
        ("     `Test string: \\u2764\nhello,\\nworld!`", "Test string: \\u2764\nhello,\\nworld!"),
        (
            '     `Test string: \\\\u2764\\n``hello``,\\\\n"world"!`',
            'Test string: \\\\u2764\\n`hello`,\\\\n"world"!',
        ),
        ("     `\nTest string: \\u2764\nhello,\\nworld!`", "Test string: \\u2764\nhello,\\nworld!"),
        ("     `\r\nTest string`", "Test string"),
    ],
)
def test_string_literals(src: str, want: Any) -> None:
    assert run(src) == want


@pytest.mark.parametrize(
    ("src", "want"),
    [
        ('let y = "hello"; y[1]', rhai.Char("e")),
        ('let y = "hello"; y[-1]', rhai.Char("o")),
        ('let y = "hello"; y[-4]', rhai.Char("e")),
        ('let y = "hello"; y[1..3]', "el"),
        ('let y = "hello"; y[..]', "hello"),
        ('let y = "hello"; y[..2]', "he"),
        ('let y = "hello"; y[2..]', "llo"),
        ('let y = "hello"; y[1..-1]', "ell"),
        ('let y = "hello"; y[1..-4]', ""),
        ('let y = "hello"; y[2..-4]', ""),
        ('let y = "hello"; y[0..18]', "hello"),
        ('let y = "hello"; y[2..-18]', ""),
        ('let y = "hello"; y[1..=3]', "ell"),
        ('let y = "hello"; y[..=]', "hello"),
        ('let y = "hello"; y[..=2]', "hel"),
        ('let y = "hello"; y[1..=-1]', "ello"),
        # Rhai 1.25 quirk, kept: an inclusive slice of one character (not the whole string)
        # is empty
        ('let y = "hello"; y[1..=-4]', ""),
        ('let y = "hello"; y[2..=2]', ""),
        ('let s = "hello, world!"; s[4..8]', "o, w"),
        ('let s = "hello, world!"; s[4..=8]', "o, wo"),
        ('"foo"[0]', rhai.Char("f")),
        ('("foo" + "bar")[5]', rhai.Char("r")),
        ('type_of("hello"[1..2])', "string"),
        # slices assigned
        ("let y = \"hello\"; y[1] = 'i'; y", "hillo"),
        ('let y = "hello"; y[1..2] = "i"; y', "hillo"),
        ('let y = "hello"; y[1..3] = "i"; y', "hilo"),
        ('let y = "hello"; y[1..3] = "iii"; y', "hiiilo"),
        ('let y = "hello"; y[1..=2] = "iii"; y', "hiiilo"),
        ('let y = "hello"; y[1..=2] = y[2..]; y', "hllolo"),
        ('let y = "hello"; y[..=] = "x"; y', "x"),
        ('let y = "hello"; y[..] = "x"; y', "x"),
        ('let y = "hello"; y[1..=2] = y[2..]; let s2 = y[1..]; s2[1..20] = "abc"; y', "hllolo"),
        (
            'let text = "hello, world!"; text[0] = \'H\'; text[7..=11] = "Earth"; text',
            "Hello, Earth!",
        ),
        # Rhai 1.25 quirk, kept: assigning at a negative index writes at position -index
        ("let y = \"hello\"; y[-1] = 'X'; y", "hXllo"),
        # sub_string and crop with ranges, positions and negative positions
        ('"hello, world!".sub_string(3..7)', "lo, "),
        ('"hello, world!".sub_string(3..=7)', "lo, w"),
        ('"hello, world!".sub_string(3, 4)', "lo, "),
        ('"hello, world!".sub_string(-8, 3)', ", w"),
        ('"hello, world!".sub_string(5)', ", world!"),
        ('"hello, world!".sub_string(-5)', "orld!"),
        ('let x = "hello! \\u2764\\u2764\\u2764"; x.sub_string(-2, 2)', "\u2764\u2764"),
        ('let x = "\\u2764\\u2764\\u2764 hello!"; x.sub_string(1, 5)', "\u2764\u2764 he"),
        ('let x = "\\u2764 hello!"; x.sub_string(99)', ""),
        ('let x = "\\u2764 hello!"; x.sub_string(1, -1)', ""),
        ('let t = "hello, world!"; t.crop(2..8); t', "llo, w"),
        ('let t = "hello, world!"; t.crop(2..=8); t', "llo, wo"),
        ('let t = "hello, world!"; t.crop(2, 8); t.crop(-5, 3); t', ", w"),
        ('let y = "hello"; crop(y, ..); y', "hello"),
        # a negative range start is 0, an end before the start is the start (Rhai's rule)
        ('"hello".sub_string(-3..=-1)', "h"),
        ('"hello".sub_string(-3..2)', "he"),
        ('"hello".sub_string(3..1)', ""),
        ("[1, 2, 3, 4, 5].extract(-2..=0)", [1]),
        ('let y = "hello"; crop(y, ..=); y', "hello"),
    ],
)
def test_string_indexing_and_ranges(src: str, want: Any) -> None:
    got = run(src)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize(
    ("src", "want"),
    [
        ("let x = 10; x[1..=3]", 5),
        ("let x = 10; x[1..4] = 7; x", 14),
        ("let x = 10; x[1]", True),
        ("let x = -1; x[60..64]", -1),
        ("let x = 0; x[0..64] = -1; x", -1),
        ("let x = 0xff; x[4..=11]", 15),
    ],
)
def test_bit_field_ranges(src: str, want: Any) -> None:
    assert run(src) == want


@pytest.mark.parametrize(
    "src",
    [
        "let x = 10; x[1..99]",
        "let x = 10; x[-1..3]",
        'let y = "hello"; y[-6]',
        'let y = "hello"; y[-9..2]',
        '#"unterminated',
    ],
)
def test_out_of_range_is_an_error(src: str) -> None:
    with pytest.raises(rhai.RhaiError) as info:
        run(src)
    assert info.value.line == 1 and info.value.column >= 1


@pytest.mark.parametrize(
    ("src", "want"),
    [
        ('pop("hello")', rhai.Char("o")),
        ('pop("hello", 3)', "llo"),
        ('pop("hello", 10)', "hello"),
        ('pop("hello", -42)', ""),
        ('let s = "hello"; let c = s.pop(); [s, c]', ["hell", rhai.Char("o")]),
        ('let s = "hello"; let t = s.pop(2); [s, t]', ["hel", "lo"]),
        ('let s = ""; s.pop()', None),
        ('const x = "a,b,c"; x.split_rev(",")', ["c", "b", "a"]),
        ('const x = "a,b,c"; x.split_rev(",", 2)', ["c", "a,b"]),
        # a builtin called in function style changes the variable passed first, as in Rhai
        ('let s = "  x  "; trim(s); s', "x"),
        ('let s = "hello"; truncate(s, 2); s', "he"),
        ("let a = [1]; let b = a; push(a, 2); [a, b]", [[1, 2], [1]]),
        ("let a = [1, 2, 3, 4, 5]; a.splice(1..3, [9]); a", [1, 9, 4, 5]),
        ("let a = [1, 2, 3, 4, 5]; a.splice(1..=3, [9]); a", [1, 9, 5]),
    ],
)
def test_string_and_array_mutators(src: str, want: Any) -> None:
    got = run(src)
    assert got == want and type(got) is type(want)
