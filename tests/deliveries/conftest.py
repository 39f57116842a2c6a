from tests.inbound.conftest import inbox, settings

__all__ = ["inbox", "settings"]
