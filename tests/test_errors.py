from edgelmm.errors import InputError, UnknownNameError, one_line


def test_messages_are_one_printable_line():
    text = str(InputError("a\nb\r\tc \x1b[31m \udcff \u2028 \x85 é 中 🙂"))
    assert text == "a b  c \\x1b[31m \\udcff \\u2028 \\x85 é 中 🙂"
    assert len(text.splitlines()) == 1 and text.isprintable()
    assert str(UnknownNameError("unknown model 'x'")) == "unknown model 'x'"  # KeyError would add quotes
    assert one_line("plain") == "plain"
