"""Fixtures of tests/docs. They live in docs_sandbox.py because the test modules import its
constants by name, and `from conftest import ...` would find tests/conftest.py first in a full run."""

from docs_sandbox import sandbox  # noqa: F401 (a fixture: pytest finds it by its name here)
