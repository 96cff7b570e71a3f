"""The `opsq` command line: the face of opsqueue. It may import everything; nothing imports it."""
