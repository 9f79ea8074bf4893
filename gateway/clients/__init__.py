"""Outbound HTTP to the services the gateway calls; no database, no feature."""
