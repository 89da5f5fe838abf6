"""Bundled sample data for `sieve demo` (see README.md for provenance and licences)."""
