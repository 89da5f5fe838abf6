import pytest

from quality.config import PipelineSettings, load
from quality.filters.common import FilterSettings


def test_file_then_env_then_overrides(tmp_path):
    cfg = tmp_path / "sieve.toml"
    cfg.write_text("max_message_bytes = 5000\n[filters]\nmax_total_chars = 900\nmin_total_words = 2\n")
    env = {"SIEVE_FILTERS__MAX_TOTAL_CHARS": "800", "SIEVE_FILTERS__REFUSAL_APPLY_TO_PAIRS": "true", "OTHER": "x"}
    s = load(PipelineSettings, cfg, env=env, overrides={"filters.min_total_words": 4})
    assert s.max_message_bytes == 5000
    assert s.filters == FilterSettings(max_total_chars=800, min_total_words=4, refusal_apply_to_pairs=True)


def test_unknown_and_badly_typed_keys_are_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown setting.*max_totl_chars"):
        load(PipelineSettings, env={"SIEVE_FILTERS__MAX_TOTL_CHARS": "1"})
    with pytest.raises(ValueError, match="max_total_chars must be a number"):
        load(PipelineSettings, env={"SIEVE_FILTERS__MAX_TOTAL_CHARS": "lots"})
    with pytest.raises(ValueError, match="true or false"):
        load(PipelineSettings, env={"SIEVE_FILTERS__REFUSAL_APPLY_TO_PAIRS": "maybe"})
    assert load(PipelineSettings, env={"SIEVE_FORMAT": "none"}).format is None
    assert load(PipelineSettings, env={"SIEVE_FORMAT": "alpaca", "SIEVE_CONFIG": "x.toml"}).format == "alpaca"
