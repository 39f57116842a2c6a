"""Builders for each provider's real payload format, and their signers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

MAILGUN_KEY = "key-test-mailgun-signing-0123456789"
INBOUND_USER = "mailslot"
INBOUND_PASSWORD = "inbound-password-0123456789"


def basic(user: str = INBOUND_USER, password: str = INBOUND_PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def sign_mailgun(
    key: str = MAILGUN_KEY, timestamp: int | None = None, token: str | None = None
) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    token = token or secrets.token_hex(25)
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {"timestamp": str(timestamp), "token": token, "signature": signature}


def mailgun_form(
    recipient: str,
    *,
    sender: str = "alice@example.org",
    from_: str = "Alice Example <alice@example.org>",
    subject: str = "Hello",
    text: str = "Hello group",
    html: str | None = "<p>Hello <b>group</b></p>",
    message_id: str | None = None,
    headers: list[list[str]] | None = None,
    signature: dict[str, str] | None = None,
    **extra: str,
) -> dict[str, str]:
    message_id = message_id or make_msgid(domain="example.org")
    all_headers = [["Message-Id", message_id], ["From", from_], ["Subject", subject]]
    all_headers += headers or []
    fields = {
        "recipient": recipient,
        "sender": sender,
        "from": from_,
        "subject": subject,
        "body-plain": text,
        "message-headers": json.dumps(all_headers),
        **(signature or sign_mailgun()),
        **extra,
    }
    if html is not None:
        fields["body-html"] = html
    return fields


def sendgrid_form(
    recipient: str,
    *,
    sender: str = "alice@example.org",
    from_: str = "Alice Example <alice@example.org>",
    subject: str = "Hello",
    text: str = "Hello group",
) -> dict[str, str]:
    """SendGrid Inbound Parse, parsed mode (no attachments: a urlencoded form will do)."""
    return {
        "envelope": json.dumps({"to": [recipient], "from": sender}),
        "from": from_,
        "subject": subject,
        "text": text,
        "headers": f"Message-ID: {make_msgid(domain='example.org')}\nFrom: {from_}\n",
        "charsets": json.dumps({"text": "utf-8", "subject": "UTF-8", "from": "UTF-8"}),
    }


def mime_message(
    to: str,
    *,
    from_: str = "Alice Example <alice@example.org>",
    subject: str = "Hello",
    text: str = "Hello group",
    html: str | None = None,
    attachments: list[tuple[str, str, bytes]] = (),  # type: ignore[assignment]
    headers: dict[str, str] | None = None,
    message_id: str | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = from_
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or make_msgid(domain="example.org")
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for filename, content_type, data in attachments:
        maintype, subtype = content_type.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def postmark_json(
    recipient: str,
    *,
    from_: str = "alice@example.org",
    from_name: str = "Alice Example",
    subject: str = "Hello",
    text: str = "Hello group",
    html: str = "",
    message_id: str | None = None,
    attachments: list[dict[str, Any]] | None = None,
    headers: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    return {
        "From": from_,
        "FromName": from_name,
        "FromFull": {"Email": from_, "Name": from_name, "MailboxHash": ""},
        "To": recipient,
        "ToFull": [{"Email": recipient, "Name": "", "MailboxHash": ""}],
        "OriginalRecipient": recipient,
        "Subject": subject,
        "MessageID": message_id or secrets.token_hex(16),
        "Date": "Sat, 28 Nov 2026 10:00:00 +0000",
        "TextBody": text,
        "HtmlBody": html,
        "Headers": [
            {"Name": "Return-Path", "Value": f"<{from_}>"},
            {"Name": "Message-ID", "Value": make_msgid(domain="example.org")},
            *(headers or []),
        ],
        "Attachments": attachments or [],
    }


def postmark_attachment(
    name: str, content_type: str, data: bytes, content_id: str = ""
) -> dict[str, Any]:
    return {
        "Name": name,
        "Content": base64.b64encode(data).decode(),
        "ContentType": content_type,
        "ContentLength": len(data),
        "ContentID": content_id,
    }


PROVIDERS = ("mailgun", "sendgrid", "postmark", "mime")
# What each provider is answered for a refusal (DESIGN.md, "Inbound webhooks").
REFUSED_CODE = {"mailgun": 406, "sendgrid": 200, "postmark": 403, "mime": 422}


def provider_request(provider: str, *recipients: str) -> dict[str, Any]:
    """``client.post`` arguments for one mail to ``recipients``, as ``provider`` sends it;
    sending them again is that provider's retry (same token, same MessageID, same bytes)."""
    if provider == "mailgun":
        return {"url": "/inbound/mailgun", "data": mailgun_form(",".join(recipients))}
    if provider == "sendgrid":
        fields = sendgrid_form(recipients[0])
        fields["envelope"] = json.dumps({"to": list(recipients), "from": "alice@example.org"})
        return {"url": "/inbound/sendgrid", "data": fields, "headers": basic()}
    if provider == "postmark":  # one OriginalRecipient per payload
        [recipient] = recipients
        return {"url": "/inbound/postmark", "json": postmark_json(recipient), "headers": basic()}
    if provider == "mime":
        return {
            "url": "/inbound/mime",
            "params": [("recipient", r) for r in recipients],
            "content": mime_message(", ".join(recipients)),
            "headers": {**basic(), "Content-Type": "message/rfc822"},
        }
    raise ValueError(provider)


def mailgun_real_order(
    recipient: str,
    *,
    html: str,
    text: str = "Hello group",
    subject: str = "Newsletter",
    attachments: list[tuple[str, str, bytes]] = (),  # type: ignore[assignment]
    signature: dict[str, str] | None = None,
    received: int = 12,
) -> list[tuple[str, tuple[str | None, bytes, str | None]]]:
    """A parsed Mailgun ``forward()`` post as ``httpx`` ``files=``, in the order Mailgun sends
    it: sorted by name, so that every header field and attachment, both bodies and their
    ``stripped-*`` copies, and ``message-headers`` come before ``signature``, and ``timestamp``
    and ``token`` come last."""
    signature = signature or sign_mailgun()
    from_ = "Newsletter Team <news@example.org>"
    headers = [
        [
            "Received",
            f"from relay{i}.example.net by mx.example.com; Sat, 28 Nov 2026 10:00:0{i % 10}",
        ]
        for i in range(received)
    ]
    headers += [
        ["Content-Type", 'multipart/mixed; boundary="xyz"'],
        ["Date", "Sat, 28 Nov 2026 10:00:00 +0000"],
        ["From", from_],
        ["Message-Id", make_msgid(domain="example.org")],
        ["Mime-Version", "1.0"],
        ["Subject", subject],
        ["To", recipient],
        ["X-Envelope-From", "<bounces@example.org>"],
        ["X-Mailgun-Incoming", "Yes"],
    ]
    fields: dict[str, str | tuple[str, str, bytes]] = {
        name: value for name, value in headers if name != "Received"
    }
    fields.update(
        {f"attachment-{i}": attachment for i, attachment in enumerate(attachments, start=1)}
    )
    fields.update(
        {
            "body-html": html,
            "body-plain": text,
            "content-id-map": "{}",
            "from": from_,
            "message-headers": json.dumps(headers),
            "recipient": recipient,
            "sender": "bounces@example.org",
            "signature": signature["signature"],
            "stripped-html": html,
            "stripped-signature": "",
            "stripped-text": text,
            "subject": subject,
            "timestamp": signature["timestamp"],
            "token": signature["token"],
        }
    )
    if attachments:
        fields["attachment-count"] = str(len(attachments))
    out: list[tuple[str, tuple[str | None, bytes, str | None]]] = [
        ("Received", (None, value.encode(), None)) for name, value in headers if name == "Received"
    ]
    for name in sorted(fields):
        value = fields[name]
        if isinstance(value, tuple):
            filename, content_type, data = value
            out.append((name, (filename, data, content_type)))
        else:
            out.append((name, (None, value.encode(), None)))
    return out
