"""Sieve's stream side: the faust worker, topic admin, metrics and the ``sieve`` CLI."""
