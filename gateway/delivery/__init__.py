"""Outbox workers and what they deliver: provider sends, CloudLink events, upkeep."""
