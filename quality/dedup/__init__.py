"""Dedup: exact, near (MinHash LSH) and semantic (FAISS) duplicates of accepted examples.

The stages here keep state (what was accepted) behind the one interface of
:class:`quality.stage.StatefulStage`.
"""
