"""Sieve's pure logic: records, normalization, filters, dedup, the pipeline. No Kafka, no torch."""

__version__ = "0.1.0"
