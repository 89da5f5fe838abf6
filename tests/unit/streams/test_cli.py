import json
import subprocess
import sys

from streams.cli import COMMANDS, build_parser, main


def test_every_command_has_help_that_teaches(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert len(sub.choices) == len(COMMANDS) >= 2
    for name, cmd in sub.choices.items():
        text = cmd.format_help()
        assert len(text) > 200, f"`sieve {name} --help` says too little"


def test_curate_end_to_end_through_main(tmp_path, mit_sample, capsys):
    rc = main(["curate", str(mit_sample), "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == 67 and sum(report["decisions"].values()) == 67


def test_usage_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["curate", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert main(["curate", "x", "--out", "o", "--batch-size", "0"]) == 2


def test_bad_config_names_the_setting(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SIEVE_PIPELINE__FILTERS__MAX_TOTL_CHARS", "5")
    assert main(["config"]) == 2
    assert "max_totl_chars" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "streams.cli", "--help"], capture_output=True, text=True, check=True)
    assert "curate" in out.stdout
