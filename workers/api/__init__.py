"""The HTTP API (`opsq api`): a face beside the CLI, over the same library functions. Nothing imports it but
the command that serves it (workers.cli.api_cmd)."""
