from pathlib import Path

from quality.reasons import DEAD_LETTER_REASONS, Reason, markdown_table

DOCS = Path(__file__).parents[3] / "docs" / "reasons.md"


def test_docs_table_matches_the_code():
    assert markdown_table() in DOCS.read_text(), "run: python -m streams.docs"


def test_codes_are_snake_case_and_stable():
    for r in Reason:
        assert r.value == r.value.lower() and " " not in r.value
    assert Reason.INVALID_JSON in DEAD_LETTER_REASONS and Reason.REFUSAL not in DEAD_LETTER_REASONS
