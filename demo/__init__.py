"""The local demo: the gateway with fake Twilio and CloudLink (``make demo``)."""
