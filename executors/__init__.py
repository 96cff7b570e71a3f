"""Platform executors, the shared HTTP layer and the sandbox. Knows nothing of Celery."""
