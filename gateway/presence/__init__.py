"""Presence per source (Teams, CloudLink, phone) and combined, in both directions."""
