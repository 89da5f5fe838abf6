"""Start-up check that both Kafka clients can decode every compression codec producers use.

Producers choose the codec of their batches (``compression.type``: gzip, snappy, lz4, zstd),
and a consumer without the matching library fails on the first such batch: aiokafka (faust's
consumer, so the worker's raw topic) raises ``UnsupportedCodecError`` inside the fetcher and
the worker exits, again on every restart, because the batch is still there. gzip is in the
standard library; the others come from these packages (core dependencies of sieve, pinned in
pyproject.toml and constraints.txt):

=============  ==========================================  ==========================
client         used by                                     snappy / lz4 / zstd
=============  ==========================================  ==========================
aiokafka       the worker's raw-topic consumer (faust)     cramjam / cramjam / cramjam
kafka-python   recovery, the batcher, trainer examples     python-snappy / lz4 / zstandard
=============  ==========================================  ==========================

:func:`require_codecs` round-trips a few bytes through each codec of each client (the
clients' own encode/decode functions, so a library that imports but cannot decode is caught
too) and raises ``ImportError`` naming the pip packages; ``sieve`` turns that into exit 2.
"""

from __future__ import annotations

CODECS = ("snappy", "lz4", "zstd")  # gzip needs no library

#: client -> codec -> the pip package that provides it to that client
PACKAGES = {
    "aiokafka": {"snappy": "cramjam", "lz4": "cramjam", "zstd": "cramjam"},
    "kafka-python": {"snappy": "python-snappy", "lz4": "lz4", "zstd": "zstandard"},
}

_SAMPLE = b'{"instruction": "codec check", "output": "codec check codec check codec check"}' * 8


def _round_trip(module, codec: str) -> str | None:
    """None if ``module`` (aiokafka.codec or kafka.codec) encodes and decodes ``codec``, else why not."""
    if not getattr(module, f"has_{codec}")():
        return "library not importable"
    try:
        out = getattr(module, f"{codec}_decode")(getattr(module, f"{codec}_encode")(_SAMPLE))
    except Exception as exc:  # a broken native library: say what it raised
        return f"{type(exc).__name__}: {exc}"
    return None if bytes(out) == _SAMPLE else "decoded bytes differ from the encoded ones"


def missing_codecs() -> dict[tuple[str, str], str]:
    """``{(client, codec): why}`` for every codec a client cannot decode; empty when all work."""
    import aiokafka.codec
    import kafka.codec

    missing = {}
    for client, module in (("aiokafka", aiokafka.codec), ("kafka-python", kafka.codec)):
        for codec in CODECS:
            if (why := _round_trip(module, codec)) is not None:
                missing[(client, codec)] = why
    return missing


def require_codecs() -> None:
    """Raise ``ImportError`` naming the pip packages to install if any codec cannot be decoded."""
    missing = missing_codecs()
    if not missing:
        return
    lines = []
    for client in PACKAGES:
        codecs = [c for c in CODECS if (client, c) in missing]
        if codecs:
            packages = sorted({PACKAGES[client][c] for c in codecs})
            details = "; ".join(f"{c}: {missing[(client, c)]}" for c in codecs)
            lines.append(f"{client} cannot decode {', '.join(codecs)} ({details}): pip install {' '.join(packages)}")
    raise ImportError(
        "Kafka compression codecs are missing, so the first batch a producer compressed with one of them "
        "would stop the worker. " + " | ".join(lines) + ". They are core dependencies of sieve: reinstall it "
        "with `pip install -c constraints.txt -e .` (or `make setup`).")
