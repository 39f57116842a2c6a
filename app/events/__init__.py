"""Events out: what happened, told to the host platform's endpoints (Standard Webhooks)."""
