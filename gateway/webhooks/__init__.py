"""Inbound provider webhooks: verify, parse, dedup keys; the chat package does the rest."""
