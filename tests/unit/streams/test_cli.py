import json
import re
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


def test_run_help_lists_every_exit_status():
    from streams.exit_codes import EXIT_STATUSES

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    text = sub.choices["run"].format_help()
    for code, _meaning in EXIT_STATUSES:
        assert re.search(rf"^  {code}\s", text, re.M), f"`sieve run --help` does not explain exit status {code}"


def test_a_metrics_port_in_use_exits_2_with_one_line_before_touching_kafka(tmp_path):
    """Measured before: a traceback and exit 1, after minutes of model loading."""
    import os
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIEVE_")}
        env.update(SIEVE_METRICS__HOST="127.0.0.1", SIEVE_KAFKA__BROKERS="127.0.0.1:9")  # nothing listens on 9
        proc = subprocess.run([sys.executable, "-m", "streams.cli", "run", "--metrics-port", str(port),
                               "--no-progress"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"127.0.0.1:{port}" in errors[0] and "metrics.port" in errors[0]


def test_errors_say_what_to_do_not_just_the_class_name():
    from aiokafka.errors import KafkaTimeoutError

    from streams.config import KafkaSettings
    from streams.exit_codes import describe_error

    text = describe_error(KafkaTimeoutError(), KafkaSettings(brokers="kafka-1:9092"))
    assert text.count("KafkaTimeoutError") == 1 and "kafka-1:9092" in text and "up and reachable" in text
    assert describe_error(ValueError("bad thing")) == "ValueError: bad thing"
