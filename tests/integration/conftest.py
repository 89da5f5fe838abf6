"""Fixtures for integration tests that talk to a real, local Apache Kafka broker.

The session broker (``kafka``) and the ``unique_topic`` / ``unique_group`` fixtures live in
tests/conftest.py, shared with the image tests (tests/container). If the broker cannot
start, the tests depending on it FAIL with the reason; they are never skipped.
"""
