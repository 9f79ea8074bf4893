"""Metrics, structured logs and health checks, shared by every feature."""
