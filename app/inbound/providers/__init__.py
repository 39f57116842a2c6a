"""The registry of inbound providers: one ``Provider`` (``app.inbound.providers.base``) per
endpoint, in the order of DESIGN.md's table. The router registers one route for each; adding a
provider is one module and one line here."""

from __future__ import annotations

from app.inbound.providers.base import Provider
from app.inbound.providers.mailgun import Mailgun, MailgunMime
from app.inbound.providers.mime import Mime
from app.inbound.providers.postmark import Postmark
from app.inbound.providers.sendgrid import SendGrid

PROVIDERS: tuple[Provider, ...] = (
    Mailgun(),
    MailgunMime(),
    SendGrid(),
    Postmark(),
    Mime(),
)
