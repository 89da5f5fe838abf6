from quality.normalize import normalize_text


def test_whitespace_is_standardized_and_trimmed():
    assert normalize_text("\u00a0 Hello\u3000world \r\n\r\n\r\n\r\nBye \n") == "Hello world\n\nBye"
    assert normalize_text("caf\u0065\u0301") == "caf\u00e9"  # NFC
    assert normalize_text("\ufeffzero\u200bwidth") == "zerowidth"


def test_code_indentation_survives_the_first_line_too():
    body = "\n    if x:\n        return 1\n    return 2\n"
    assert normalize_text(body) == "    if x:\n        return 1\n    return 2"


def test_joiners_that_carry_meaning_stay():
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467"
    assert normalize_text(family) == family
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
    assert normalize_text(persian) == persian


def test_long_runs_of_spaces_are_trimmed_the_same():
    """The trailing-space pattern starts only where a run begins (it rescanned long runs of
    tabs from every position: bench/bench_poison.py); the result is unchanged."""
    assert normalize_text("a" + "\t" * 50_000 + "b") == "a" + "\t" * 50_000 + "b"
    assert normalize_text("a \t \nb") == "a\nb"
    assert normalize_text("x" + " " * 30_000 + "\ny") == "x\ny"
