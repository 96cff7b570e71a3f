"""Operator features: dead letters, health checks, queue control, reports, the stuck detector."""
