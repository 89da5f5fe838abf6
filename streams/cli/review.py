"""``sieve review``: a local web page over the outputs, and operators' overrides."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from pathlib import Path

HELP = """\
Serves a web page to review decisions: rejections by reason, source and batch with
the example's text; a duplicate beside the first copy it matched; a contaminated
example beside its benchmark item; an accepted sample per batch; and a form to
overrule a decision by id (force-accept or force-reject, with a note).

  sieve review out/                                 file mode: the --out DIR of `sieve curate`
  sieve review out/ --batches batches/ --benchmarks bench/*.jsonl
  sieve review --kafka                              stream mode: the newest records of the
                                                    output, batches and control topics
Overrides:
  file mode    appended to DIR/overrides.jsonl (append-only, the audit log); the next
               `sieve curate ... --out DIR` applies them (also --overrides FILE): a
               force-accepted id lands in accepted.jsonl, a force-rejected one in
               rejected.jsonl as operator_rejected, both with an "overridden" field
               (who, note, at, the decision and reasons it had); summary.json counts them.
  stream mode  published on kafka.control_topic (sieve.control, the audit log), where
               `sieve batcher` honours them: a force-rejected id leaves the open batch,
               or is listed under "revoked" in the next manifest if an earlier batch holds
               it (trainers drop it); a force-accepted example joins the open batch,
               marked "overridden" in its shard row and in the manifest.
  For scripts, without the page:
  sieve review out/ --force-reject ID --note "leaks a customer name"
  sieve review --kafka --force-accept ID --note "false positive: not a benchmark item"

Safety: the page binds 127.0.0.1 unless --host says otherwise; any other address
needs a token (--token, or SIEVE_REVIEW_TOKEN, which keeps it out of `ps`): at least
16 characters, given as SECRET or OWNER:SECRET (several, comma-separated, in the
variable). With a token, the browser asks for it once (a session cookie); scripts send
"Authorization: Bearer SECRET". Every override records who made it: the token's OWNER,
else the name typed in the form (default: your OS user). Text is shown exactly as the
outputs hold it (PII already redacted as there), always as text, never as markup.
See docs/review.md and docs/security.md.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("review", help="web page to review decisions and override them", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", nargs="?", type=Path, metavar="DIR", help="the --out directory of `sieve curate`")
    p.add_argument("--kafka", action="store_true", help="stream mode: read the output topics instead of DIR")
    p.add_argument("--config", type=Path, help="TOML settings file (default: $SIEVE_CONFIG)")
    p.add_argument("--brokers", help="bootstrap servers (kafka.brokers), stream mode")
    p.add_argument("--batches", type=Path, metavar="BDIR",
                   help="the batch directory (file mode: the --batches DIR of the curate run; stream mode: where "
                        "the batcher's directory is mounted here, if the manifests' paths are not readable)")
    p.add_argument("--benchmarks", nargs="+", type=Path, metavar="PATH",
                   help="benchmark files, to show the item a contaminated example matched "
                        "(default: pipeline.decontam.benchmark_paths)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; others need a token)")
    p.add_argument("--port", type=int, default=8765, help="port (default: 8765; 0 = a free port)")
    p.add_argument("--token", action="append", default=[], metavar="[OWNER:]SECRET",
                   help="require this token (repeatable); default: $SIEVE_REVIEW_TOKEN")
    p.add_argument("--max-records", type=int, default=20_000, metavar="N",
                   help="newest envelopes kept per output file or topic (default: 20000; ~8 KB of memory each)")
    p.add_argument("--refresh-s", type=float, default=30.0, metavar="S",
                   help="stream mode: re-read the topics when the data is older than this (default: 30)")
    g = p.add_argument_group("an override without the page (scripts)")
    act = g.add_mutually_exclusive_group()
    act.add_argument("--force-accept", metavar="ID", help="overrule a rejection of ID")
    act.add_argument("--force-reject", metavar="ID", help="overrule the acceptance of ID")
    g.add_argument("--note", help="why (required with --force-accept/--force-reject)")
    g.add_argument("--who", default=None, help="who decides (default: your OS user)")
    p.set_defaults(func=run)


def _source(args: argparse.Namespace, settings):
    if (args.dir is None) == (not args.kafka):
        raise ValueError("give either DIR (file mode) or --kafka (stream mode)")
    if args.kafka:
        from streams.review.topics import KafkaSource

        return KafkaSource(settings, max_records=args.max_records, batches_dir=args.batches)
    from streams.review.files import FileSource

    return FileSource(args.dir, batches_dir=args.batches, max_records=args.max_records)


def _benchmarks(args: argparse.Namespace, settings) -> dict:
    from quality.decont.ngram import load_benchmarks

    paths = args.benchmarks or settings.pipeline.decontam.benchmark_paths
    return {item.id: item for item in load_benchmarks(paths)} if paths else {}


def run(args: argparse.Namespace) -> int:
    from streams.config import load_settings
    from streams.review.server import ReviewApp, check_bind, make_server, parse_tokens
    from streams.review.store import ReviewStore

    overrides = {"kafka.brokers": args.brokers} if args.brokers else None
    settings = load_settings(args.config, overrides=overrides)
    source = _source(args, settings)
    if args.force_accept or args.force_reject:
        return _override(args, source)
    specs = args.token or [s for s in os.environ.get("SIEVE_REVIEW_TOKEN", "").split(",") if s]
    tokens = parse_tokens(specs)
    check_bind(args.host, tokens)
    store = ReviewStore(source, benchmarks=_benchmarks(args, settings), refresh_s=args.refresh_s)
    store.refresh(force=True)
    app = ReviewApp(store, tokens=tokens, who_default=getpass.getuser())
    server = make_server(app, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"sieve review: serving http://{host}:{port}/ ({source.describe()}; "
          f"{'token required' if tokens else 'no token: loopback only'})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        getattr(source, "close", lambda: None)()
    return 0


def _override(args: argparse.Namespace, source) -> int:
    from quality.overrides import FORCE_ACCEPT, FORCE_REJECT, override_from_envelope

    action, ex_id = (FORCE_ACCEPT, args.force_accept) if args.force_accept else (FORCE_REJECT, args.force_reject)
    if not (args.note or "").strip():
        raise ValueError("--note is required: say why you overrule the decision (it is kept in the audit log)")
    wanted = "rejected" if action == FORCE_ACCEPT else "accepted"
    envs = [e for e in source.load()["envelopes"] if e.get("id") == ex_id]
    env = next((e for e in envs if e.get("decision") == wanted), None)
    if env is None:
        seen = ", ".join(sorted({str(e.get("decision")) for e in envs})) or "no envelope"
        raise ValueError(f"{action} overrules {'an' if wanted == 'accepted' else 'a'} {wanted} decision, but "
                         f"{ex_id!r} has {seen} among the newest "
                         f"{args.max_records} records of each output (raise --max-records if it is older)")
    record = override_from_envelope(env, action, args.note.strip(), args.who or getpass.getuser(), time.time())
    where = source.write_override(record.to_record())
    getattr(source, "close", lambda: None)()
    print(json.dumps({"override": record.to_record(), "written_to": where}))
    print(f"sieve review: {action} of {ex_id} recorded in {where}", file=sys.stderr)
    return 0
