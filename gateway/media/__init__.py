"""Media of messages, fetched from the provider for CloudLink (which holds no provider
credentials) and passed on as they stream."""
