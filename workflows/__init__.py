"""Workflows: specs, the DAG-to-canvas compiler, rollback and approval gates (issue 4)."""
