"""Prometheus metrics for operators (GET /metrics)."""
