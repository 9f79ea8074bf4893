"""Customer accounts, the integrations added to them, and SCIM keys."""
