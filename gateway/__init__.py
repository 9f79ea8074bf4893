"""cloudlink-gateway: connects CloudLink to Entra ID, Twilio, CM.com and Microsoft Graph."""
