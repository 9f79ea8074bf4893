"""Messaging channels: a provider's WhatsApp, SMS or Messenger entry bound to a chat queue."""
