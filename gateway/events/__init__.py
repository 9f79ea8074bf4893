"""The event history of each account, which is also its ordered feed."""
