"""Celery beat: the maintenance schedule (issue 5)."""
