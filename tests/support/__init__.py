"""Helpers shared by the tests: real services, real worker processes."""
