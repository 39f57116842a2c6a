"""The inbound benchmark (``make bench``): the service against a minimal baseline app."""
