"""``sieve config``: print the effective settings (defaults + file + environment)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = """\
Prints the settings a `sieve run` or `sieve curate` started now would use, after
applying the TOML file (--config or $SIEVE_CONFIG) and SIEVE_* environment variables.
Secrets (sasl_password) are masked. Use it to check a deployment's configuration.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the effective settings", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="TOML settings file (default: $SIEVE_CONFIG)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from quality.config import as_dict
    from streams.config import load_settings

    data = as_dict(load_settings(args.config))
    kafka = data.get("kafka", {})
    if kafka.get("sasl_password"):
        kafka["sasl_password"] = "***"
    print(json.dumps(data, indent=2, default=str))
    return 0
