"""mailslot: email in, group posts out."""

__version__ = "0.1.0"
