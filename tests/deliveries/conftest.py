from tests.inbound.conftest import inbox, rate_limits, settings

__all__ = ["inbox", "rate_limits", "settings"]
