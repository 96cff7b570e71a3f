"""Conveniences for one machine: the embedded Redis and finding the broker URL."""
