"""The operator admin API under /api/v1."""
