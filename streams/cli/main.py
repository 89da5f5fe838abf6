"""The ``sieve`` command line.

Each subcommand lives in its own module of ``streams/cli/`` exposing
``register(subparsers)``; this file only lists them, so commands stay small and
independent.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from quality.stage import StageBroken

#: Exit status when a stage fails on every example and on a known-good canary (a broken model).
EXIT_STAGE_BROKEN = 3

# (module, command) in the order --help lists them
COMMANDS = [
    "streams.cli.curate",
    "streams.cli.score",
    "streams.cli.train",
    "streams.cli.config",
    "streams.cli.run",
    "streams.cli.demo",
    "streams.cli.batcher",
    "streams.cli.batches",
    "streams.cli.review",
]

EPILOG = """\
configuration:
  Settings come from defaults, then a TOML file (--config or $SIEVE_CONFIG), then
  environment variables named after the setting path with double underscores, e.g.
    SIEVE_PIPELINE__MAX_MESSAGE_BYTES=2097152
    SIEVE_PIPELINE__FILTERS__MAX_TOTAL_CHARS=20000
  `sieve config` prints the effective settings. See docs/configuration.md.

examples:
  sieve curate data.jsonl --out out/          # file mode: accepted/rejected/dead_letter + summary
  sieve score data.jsonl --out scored.jsonl   # every record with every score, nothing dropped
  sieve run                                   # stream worker on the configured brokers
  sieve demo                                  # local broker + worker + producer, live counts
  sieve review out/                           # web page: browse rejections, override decisions
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sieve",
        description="Sieve: streaming data-quality service for LLM fine-tuning data. Every input example "
                    "ends as exactly one of accepted, rejected (with reason codes) or dead-letter.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(max(logging.WARNING, logging.getLogger().level))  # CPU-feature probing
    if getattr(args, "no_progress", False):  # also the model-loading bars of transformers / huggingface_hub
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from streams.exit_codes import EXIT_KAFKA_UNREACHABLE, EXIT_USAGE, KafkaUnreachable, PortInUse

    try:
        return int(args.func(args) or 0)
    except KafkaUnreachable as exc:  # a supervisor may retry later: its own status
        print(f"sieve {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_KAFKA_UNREACHABLE
    except (ValueError, FileNotFoundError, ImportError, PortInUse) as exc:  # usage errors: say what and exit 2
        print(f"sieve {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StageBroken as exc:  # not the data: a stage fails on known-good input too
        print(f"sieve {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_STAGE_BROKEN
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `sieve config | head`
        sys.stderr.close()
        return 0
    except OSError as exc:
        if exc.filename is None:  # not a path problem (a socket, a broker): a bug or an outage, with its traceback
            raise
        # a file or directory that cannot be read or written (permissions, a file where a directory
        # is needed, a read-only disk): say which and exit 2, as for usage errors
        where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        print(f"sieve {args.command}: error: {exc.strerror or type(exc).__name__}: {where}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
