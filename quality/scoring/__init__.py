"""Decisions on model scores that need no model: threshold and quota policies, and their gates.

The model stage (``models/stage.py``) writes the scores into the typed features; the
stages here decide on them, so a decider without a GPU can apply them.
"""
