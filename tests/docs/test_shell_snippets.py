"""Every command of a ```bash / ```sh block that needs no broker runs in the sandbox and exits 0.

Commands that need a broker run in tests/docs/test_stream_snippets.py; the ones no test can run
are in tests/docs/allowlist.py with the reason. How a command is run, and the little the
harness swaps (a placeholder batch, a port), is tests/docs/runner.py.
"""

from __future__ import annotations

import json
import re

import pytest
from docs_allowlist import allow_listed
from docs_sandbox import BATCH_SHAPES, REVOKED_ID
from docs_runner import batch_runs, clean_env, needs_broker, run_id, run_once, run_service, script, service_of
from docs_snippets import Command, shell_commands

pytestmark = pytest.mark.docs

FILE_RUNS = batch_runs([c for c in shell_commands() if not allow_listed(c) and not needs_broker(c)], BATCH_SHAPES)


def option(command: Command, name: str) -> str | None:
    words = command.words
    return words[words.index(name) + 1] if name in words and words.index(name) + 1 < len(words) else None


def check_effect(command: Command, shape: str | None, output: str, sandbox) -> None:
    """What the command must have done, beyond exiting 0, where the page says so."""
    program, root = command.program, sandbox.root
    if command.is_help:
        assert "usage:" in output, output[-2000:]
    elif program == "sieve curate":
        summary = json.loads((root / option(command, "--out") / "summary.json").read_text())
        assert summary["total"] > 0 and sum(summary["decisions"].values()) == summary["total"], summary
        if option(command, "--batches"):
            assert (root / option(command, "--batches") / "_state").is_dir()
    elif program == "sieve score":
        assert (root / option(command, "--out")).read_text().count("\n") > 0
    elif program == "sieve batches list":
        for batch in (root / "sieve-batches").glob("0*"):
            assert batch.name in output, output
    elif program == "sieve config":  # what the block exported is what the check shows
        exported = dict(re.findall(r"SIEVE_KAFKA__(\w+)=([^\s\"$]+)", " ".join(command.env)))
        assert exported or '"kafka"' in output, output
        for key, value in exported.items():
            assert f'"{key.lower()}": "{value}"' in output, f"{key}={value} not shown:\n{output}"
    elif program == "python examples/trainer_consumer.py":
        assert "files verified" in output, output
        if shape == "mixed":  # the next manifest beside it revokes an id of this batch
            assert "dropped 1 rows of this batch that operators revoked since" in output, output
        if shape == "pairs-only-revoking":
            assert f"revoked: {REVOKED_ID} of batch {sandbox.batches['mixed'].name}" in output, output


@pytest.mark.parametrize(("command", "shape"), FILE_RUNS, ids=[run_id(r) for r in FILE_RUNS])
def test_documented_command_runs(sandbox, command, shape, tmp_path):
    batch = str(sandbox.batches[shape].relative_to(sandbox.root)) if shape else None
    code, env = script(command, batch=batch), clean_env(sandbox.env)
    service = service_of(command)
    if service is not None:
        rc, output = run_service(code, service, sandbox.root, env, tmp_path / "service.log")
    else:
        proc = run_once(code, sandbox.root, env)
        rc, output = proc.returncode, proc.stdout + proc.stderr
    assert rc == 0, f"{command.id}: `{command.text}` exited {rc}:\n{output[-4000:]}"
    check_effect(command, shape, output, sandbox)


ALLOWED_OWN = [c for c in shell_commands() if allow_listed(c) and c.words[0] in ("sieve", "python")
               and c.program != "python -m pytest"]


@pytest.mark.parametrize("command", ALLOWED_OWN, ids=[f"{c.id} {c.program}" for c in ALLOWED_OWN])
def test_a_command_that_cannot_run_here_still_parses(sandbox, command):
    """An allow-listed command of Sieve's own is not run, but its words must still be what the program
    takes: the real argument parser accepts them (`sieve`), or its --help names every option used."""
    if command.words[0] == "sieve":
        from streams.cli import build_parser

        try:
            args = build_parser().parse_args(command.words[1:])
        except SystemExit as exc:
            pytest.fail(f"{command.id}: `{command.text}` is not a valid sieve command line (exit {exc.code})")
        assert args.func is not None
    help_code = " ".join(command.words[:2] if command.words[0] == "python" else command.program.split()) + " --help"
    proc = run_once(help_code, sandbox.root, clean_env(sandbox.env))
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-2000:]
    for word in command.words:
        if word.startswith("--"):
            assert word.split("=")[0] in proc.stdout, f"{command.id}: {word} is not an option of {command.program}"
