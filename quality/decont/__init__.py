"""Decontamination: examples that reproduce an evaluation benchmark item."""
