"""What the outbox delivers for messaging: agents' replies through a provider's sender,
account events to CloudLink endpoints (Standard Webhooks), endpoints and dead letters."""
