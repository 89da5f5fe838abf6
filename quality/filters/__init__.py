"""Filters: stateless checks of one example at a time (heuristics, PII, pair structure).

Each module holds one stage family and registers its stages (see :mod:`quality.registry`);
the registry finds every module of this folder by itself. Two modules hold no stage:
``common.py`` (the shared settings and argument checks) and ``repetition_units.py`` (the
lines, lists, paragraphs and sentences the repetition rules count).
"""
