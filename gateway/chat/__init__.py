"""Provider-neutral chat: contacts, conversations, messages and their delivery status."""
