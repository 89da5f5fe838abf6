"""The shipped default heads (weights, metadata and model card); a package so that they install as package data."""
