from pathlib import Path

from streams.config_docs import markdown

DOCS = Path(__file__).parents[3] / "docs" / "configuration.md"


def test_configuration_docs_match_the_settings():
    assert DOCS.read_text() == markdown(), "run: python -m streams.docs"


def test_every_setting_has_an_env_var_that_loads(monkeypatch):
    from streams.config import load_settings

    monkeypatch.setenv("SIEVE_KAFKA__BATCH_MAX", "17")
    monkeypatch.setenv("SIEVE_SNAPSHOT_INTERVAL_S", "2.5")
    s = load_settings()
    assert s.kafka.batch_max == 17 and s.snapshot_interval_s == 2.5
    assert "`SIEVE_KAFKA__BATCH_MAX`" in markdown()
