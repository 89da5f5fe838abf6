"""Training content on the development data: transcript conventions found and converted, turn order,
and PII redactions before and after reserved values were left alone. Writes docs/eval_content.md.

    python bench/eval_content.py [--data ../shared/data] [--before CHECKOUT]

``--before`` names a checkout of the code before this change (e.g. ``git worktree add /tmp/before
f901182``); its ``quality.filters.pii.redact`` counts the findings as they were redacted then.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quality.filters.turns import TurnOrderCheck  # noqa: E402
from quality.privacy import DETECTORS, RESERVED, STRICT, Redactor  # noqa: E402
from quality.privacy.allow import DOC_SECRETS, PUBLIC_RESOLVERS, TEST_CARDS  # noqa: E402
from quality.records import Example, RawRecord, parse  # noqa: E402

#: Role-marker conventions looked for in every text field: at a structural position, and anywhere.
SURVEY = {
    "Human:/Assistant: after a blank line or at the start": r"(?:\A\s*|\n\n)(?:Human|Assistant):",
    "Human:/Assistant: anywhere": r"\b(?:Human|Assistant):",
    "### Instruction:/### Response: headings": r"(?m)^#{2,4}\s*(?:Instruction|Input|Response|Human|Assistant)\b",
    "USER:/ASSISTANT: (upper case)": r"\b(?:USER|ASSISTANT):",
    "User:/Assistant: at a line start": r"(?m)^(?:User|Assistant|System):",
    "User:/Bot: at a line start": r"(?m)^(?:User|Bot):",
    "Q:/A: at a line start": r"(?m)^(?:Q|A):",
    "Person A:/Person B:, Customer:, Agent: at a line start": r"(?m)^(?:Person [AB]|Customer|Agent):",
    "ChatML <|im_start|>": r"<\|im_start\|>|<\|im_end\|>",
    "Llama 2 [INST]": r"\[/?INST\]|<<SYS>>",
    "Llama 3 <|start_header_id|>": r"<\|start_header_id\|>|<\|eot_id\|>",
    "Gemma <start_of_turn>": r"<start_of_turn>|<end_of_turn>",
}
TEXT_FIELDS = ("instruction", "input", "output", "prompt", "chosen", "rejected", "text", "text_1", "text_2")


def files(data: Path) -> list[Path]:
    folders = ("instruction", "preference", "pairs", "benchmarks")
    return sorted(p for folder in folders for p in (data / folder).glob("*.jsonl"))


def survey(data: Path) -> dict[str, Counter]:
    rx = {name: re.compile(p) for name, p in SURVEY.items()}
    out: dict[str, Counter] = defaultdict(Counter)
    for path in files(data):
        for line in path.open(encoding="utf-8"):
            row = json.loads(line)
            for field in TEXT_FIELDS:
                value = row.get(field)
                if isinstance(value, str):
                    for name, pattern in rx.items():
                        if pattern.search(value):
                            out[name][f"{path.parent.name}/{path.name}:{field}"] += 1
    return out


def conversions(data: Path) -> tuple[Counter, Counter, Counter, list[str]]:
    converted, unconverted, verdicts, notes = Counter(), Counter(), Counter(), []
    check = TurnOrderCheck()
    for path in files(data):
        if path.parent.name not in ("instruction", "preference"):
            continue
        for i, line in enumerate(path.open("rb")):
            ex = parse(RawRecord(line, {"file": path.name, "line": i}))
            if not isinstance(ex, Example):
                continue
            for field, convention in ex.converted.items():
                converted[(path.name, field, convention)] += 1
            for field in ex.unconverted:
                unconverted[(path.name, field)] += 1
            v = check.check(ex)
            if v.reason is not None or v.replacement is not None:
                verdicts[(path.name, v.reason.value if v.reason else "repaired")] += 1
                notes.append(f"`{ex.id}`: {v.detail}")
    return converted, unconverted, verdicts, notes


def texts(data: Path) -> list[str]:
    out = []
    for path in files(data):
        for line in path.open(encoding="utf-8"):
            row = json.loads(line)
            out += [row[f] for f in TEXT_FIELDS if isinstance(row.get(f), str)]
    return out


def category(kind: str, value: str) -> str:
    """Which reserved class a kept value is in."""
    if kind == "ip_address":
        import ipaddress

        ip = ipaddress.ip_address(value)
        if ip in PUBLIC_RESOLVERS:
            return "public DNS resolver"
        if any(ip in ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                                                        "2001:db8::/32")):
            return "documentation range (RFC 5737/3849)"
        return "private, loopback, link-local or multicast"
    if kind == "email":
        return "example.com/.net/.org or a reserved TLD"
    if kind == "phone":
        digits = re.sub(r"\D", "", value).removeprefix("1")
        return "NANP toll-free (an organisation's line)" if digits[:3] in {"800", "833", "844", "855", "866", "877",
                                                                          "888"} else "fictional (555-01xx, Ofcom)"
    if kind == "credit_card":
        return "processor test card" if re.sub(r"\D", "", value) in TEST_CARDS else "?"
    return "documentation key" if value in DOC_SECRETS else "?"


def pii(all_texts: list[str]) -> tuple[Counter, Counter, Counter, Counter, list[tuple[str, str]]]:
    """Findings by kind (strict, after), kept by kind, kept by (kind, class), and each kept value in context.

    The class of a kept value comes from re-finding it in the original text (the redactor works
    detector by detector on the text the earlier ones left), so it is for reading, not accounting."""
    strict, default, kept, classes = Counter(), Counter(), Counter(), Counter()
    samples: list[tuple[str, str]] = []
    for text in all_texts:
        strict.update(STRICT.redact(text)[1])
        _, counts, allowed = Redactor().redact(text)
        default.update(counts)
        kept.update(allowed)
        if not allowed:
            continue
        for kind, _placeholder, pattern, valid in DETECTORS:
            for m in pattern.finditer(text):
                value = m.group("value") if "value" in m.re.groupindex else m.group(0)
                if (valid is None or valid(m)) and RESERVED.allows(kind, value):
                    classes[(kind, category(kind, value))] += 1
                    samples.append((kind, text[max(0, m.start() - 50):m.end() + 30].replace("\n", " ")))
    return strict, default, kept, classes, samples


BEFORE_SNIPPET = """
import json, sys
from collections import Counter
from quality.filters.pii import redact
total = Counter()
for text in json.load(sys.stdin):
    total.update(redact(text)[1])
print(json.dumps(total))
"""


def before_counts(checkout: Path, all_texts: list[str]) -> Counter:
    out = subprocess.run([sys.executable, "-c", BEFORE_SNIPPET], input=json.dumps(all_texts), text=True,
                         capture_output=True, check=True, cwd=checkout, env={"PYTHONPATH": str(checkout)})
    return Counter(json.loads(out.stdout))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--before", type=Path, help="a checkout of the code before (its PII redaction is counted)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "eval_content.md")
    args = ap.parse_args(argv)
    if not files(args.data):
        ap.error(f"no JSONL files under {args.data}/{{instruction,preference,pairs,benchmarks}}; pass --data")
    found = survey(args.data)
    converted, unconverted, verdicts, notes = conversions(args.data)
    all_texts = texts(args.data)
    strict, default, kept, classes, samples = pii(all_texts)
    before = before_counts(args.before, all_texts) if args.before else None
    lines = ["# Training content on the development data", "",
             f"Generated by `bench/eval_content.py` on `{args.data.parent.name}/{args.data.name}` (dev: "
             f"{len(files(args.data))} files, "
             f"{len(all_texts):,} text fields). What it measures is described in [transcripts.md](transcripts.md) "
             "and [security.md](security.md#pii).", "",
             "## Role-marker conventions found", "",
             "Rows whose field matches, per convention looked for (every file of `instruction/`, `preference/`, "
             "`pairs/`, `benchmarks/`):", "", "| convention | rows | where |", "|---|---:|---|"]
    for name in SURVEY:
        where = found.get(name, Counter())
        top = ", ".join(f"{k} {n}" for k, n in where.most_common(6)) + (" ..." if len(where) > 6 else "")
        lines.append(f"| {name} | {sum(where.values())} | {top or '-'} |")
    lines += ["", "## Converted into turns", "", "| file | field | convention | rows |", "|---|---|---|---:|"]
    lines += [f"| {f} | {field} | {c} | {n} |" for (f, field, c), n in sorted(converted.items())]
    lines += [f"| {f} | {field} | not converted (turns do not alternate) | {n} |"
              for (f, field), n in sorted(unconverted.items())]
    lines += ["", "Turn order (`turn_order`, policy `repair`) on every parsed instruction and preference row:", ""]
    lines += [f"- {f}: {v} {n}" for (f, v), n in sorted(verdicts.items())] or ["- nothing rejected or repaired"]
    lines += [f"  - {note}" for note in notes]
    lines += ["", "## PII findings in every text field", "",
              "`before`: the code before this change; `strict`: every finding, reserved values too (what "
              "decontamination compares); `after`: what the PII stage redacts now (reserved values kept).", "",
              "| kind | before | strict | after | kept |", "|---|---:|---:|---:|---:|"]
    for kind in ("email", "phone", "ip_address", "credit_card", "secret"):
        b = before.get(kind, 0) if before is not None else "-"
        lines.append(f"| {kind} | {b} | {strict.get(kind, 0)} | {default.get(kind, 0)} | {kept.get(kind, 0)} |")
    lines += ["", "Kept, by class:", ""] + [f"- {kind}, {cat}: {n}" for (kind, cat), n in sorted(classes.items())]
    lines += ["", "Every kept value, read in context:", ""]
    lines += [f"- {kind}: `{s}`" for kind, s in samples]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
