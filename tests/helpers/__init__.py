"""Helpers shared by the tests: a real event pipeline in a temporary directory."""
