"""How the inbound endpoints are documented: each provider's request fields, its authentication
and its answers. They read the raw stream, so FastAPI cannot infer any of this."""

from __future__ import annotations

from typing import Any

# The answers, per provider (DESIGN.md "Inbound webhooks"), as the `inbound` tag shows them.
STATUS_TABLE = """\
| outcome | Mailgun | SendGrid | Postmark | raw MIME |
| --- | --- | --- | --- | --- |
| accepted, or a duplicate of an accepted mail | 200 | 200 | 200 | 200 |
| refused for good (a refusal `reason`) | 406 | 200 | 403 | 422 |
| bad signature or credentials | 401 | 401 | 401 | 401 |
| rate limited (with `Retry-After`) | 429 | 503 | 429 | 429 |
| our own failure (database or disk down: 503; a bug: 500) | 503/500 | 503/500 | 503/500 | 503/500 |
| the endpoint's secret is not configured | 404 | 404 | 404 | 404 |
| the request is over `MAX_REQUEST_BYTES` | 413 | 413 | 413 | 413 |
"""

TAG_DESCRIPTION = f"""\
Mail providers' webhooks: one endpoint per provider, in that provider's own format and \
authenticated in its own way. Paths are exact (no trailing-slash redirect). A mail is routed on \
its envelope recipient, never on To/Cc.

Answers to authenticated requests are `application/json` (`InboundAnswer`: status, reason, \
post_ids, delivery_ids) whatever the status code, so that every provider retries exactly when \
it should; only 401, 404 and 413 are problem documents. When one mail names several of our \
addresses, the answer is retryable if any outcome is, else 200 if any was accepted or a \
duplicate, else the refusal code. Set-up probes (no recipient of ours) are answered 200, \
except on `/inbound/mime`: a recipient an MTA names is never a probe, and one at another \
domain is refused (`unknown_recipient`).

{STATUS_TABLE}"""

BASIC: list[dict[str, list[str]]] = [{"InboundBasic": []}]
# The Mailgun signature is in the body: no HTTP authentication scheme describes it.
MAILGUN_SIGNATURE = (
    "\n\n**Authentication**: the Mailgun webhook signature, in the body: `signature` is the "
    "hex HMAC-SHA256 of `timestamp` followed by `token`, keyed with the signing key "
    "(`MAILGUN_SIGNING_KEY`, several comma-separated keys accepted for rotation). Timestamps "
    "from 9 hours in the past to 5 minutes in the future are accepted (Mailgun retries re-send "
    "the original signature for 8 hours); a token seen before is answered as a duplicate of the "
    "delivery that first used it. A bad signature answers 401 with "
    "`WWW-Authenticate: Mailgun`, and nothing is recorded."
)


def _text(description: str, example: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "description": description}
    if example is not None:
        schema["examples"] = [example]
    return schema


def _file(description: str) -> dict[str, Any]:
    return {"type": "string", "format": "binary", "description": description}


_MAILGUN_SIGNED = {
    "timestamp": _text("Unix time of the signature.", "1764958000"),
    "token": _text("A random string, used once (50 characters).", "7f2c9e1d5b8a4c3f"),
    "signature": _text(
        "Hex HMAC-SHA256 of `timestamp` + `token` with the signing key.",
        "a3d5c0c1f3e9b2f4a7d8e6c5b4a39281f0e1d2c3b4a5968778695a4b3c2d1e0f",
    ),
}
_MAILGUN_ENVELOPE = {
    "recipient": _text(
        "The envelope recipient(s), comma-separated: the address(es) mail is routed on.",
        "newsletter.k3x9q2m7v5t8w1z4y6b0n3c5d7@in.example.com",
    ),
    "sender": _text("The envelope sender (empty for a null sender).", "news@example.org"),
}
MAILGUN_FIELDS: dict[str, Any] = {
    "type": "object",
    "required": ["timestamp", "token", "signature", "recipient"],
    "properties": {
        **_MAILGUN_SIGNED,
        **_MAILGUN_ENVELOPE,
        "from": _text("The From header.", "Weekly News <news@example.org>"),
        "subject": _text("The Subject header.", "This week"),
        "body-plain": _text("The text body."),
        "body-html": _text("The HTML body (sanitised before it is stored)."),
        "stripped-text": _text("The text body without quoted parts (not used)."),
        "message-headers": _text(
            'Every header, as a JSON list of `["Name", "value"]` pairs.',
            '[["Message-Id", "<1@example.org>"]]',
        ),
        "content-id-map": _text(
            'JSON object mapping `<content-id>` to an attachment field name (`"attachment-1"`).'
        ),
        "attachment-count": _text("How many `attachment-N` files follow.", "1"),
        "X-Mailgun-Spf": _text("SPF verdict (`Pass`, `Fail`, ...).", "Pass"),
        "X-Mailgun-Dkim-Check-Result": _text("DKIM verdict (`Pass`, `Fail`, ...).", "Pass"),
        "Message-Id": _text("The Message-Id, when `message-headers` lacks it."),
    },
    "patternProperties": {"^attachment-[0-9]+$": _file("An attachment (multipart only).")},
    "additionalProperties": True,
}
MAILGUN_MIME_FIELDS: dict[str, Any] = {
    "type": "object",
    "required": ["timestamp", "token", "signature", "recipient", "body-mime"],
    "properties": {
        **_MAILGUN_SIGNED,
        **_MAILGUN_ENVELOPE,
        "body-mime": _file("The whole raw message (RFC 5322)."),
        "X-Mailgun-Spf": _text("SPF verdict.", "Pass"),
        "X-Mailgun-Dkim-Check-Result": _text("DKIM verdict.", "Pass"),
    },
    "additionalProperties": True,
}
SENDGRID_FIELDS: dict[str, Any] = {
    "type": "object",
    "required": ["envelope"],
    "properties": {
        "envelope": _text(
            'JSON `{"to": [...], "from": "..."}`: the envelope recipients mail is routed on.',
            '{"to": ["newsletter.k3x9q2m7v5t8w1z4y6b0n3c5d7@in.example.com"], '
            '"from": "news@example.org"}',
        ),
        "email": _file(
            'Raw mode ("POST the raw, full MIME message"): the whole message; the parsed '
            "fields below are then absent."
        ),
        "from": _text("The From header (parsed mode).", "Weekly News <news@example.org>"),
        "to": _text("The To header (not used for routing)."),
        "subject": _text("The Subject header.", "This week"),
        "text": _text("The text body."),
        "html": _text("The HTML body (sanitised before it is stored)."),
        "headers": _text("The raw header block."),
        "charsets": _text('JSON object: the charset of each field (`{"text": "utf-8"}`).'),
        "attachments": _text("How many attachment files follow.", "1"),
        "attachment-info": _text(
            'JSON object: per attachment field, `{"filename", "type", "content-id"}`.'
        ),
        "content-ids": _text("JSON object mapping a content-id to an attachment field."),
        "SPF": _text("SPF verdict.", "pass"),
        "dkim": _text("DKIM verdicts, e.g. `{@example.org : pass}`."),
        "sender_ip": _text("The sending server's IP address (not used)."),
        "spam_score": _text("Spam score (not used)."),
        "spam_report": _text("Spam report (not used)."),
    },
    "patternProperties": {"^attachment[0-9]+$": _file("An attachment.")},
    "additionalProperties": True,
}
_POSTMARK_ADDRESS = {
    "type": "object",
    "properties": {
        "Email": _text("Address.", "news@example.org"),
        "Name": _text("Display name.", "Weekly News"),
        "MailboxHash": _text("The `+tag` of the address, if any."),
    },
}
POSTMARK_FIELDS: dict[str, Any] = {
    "type": "object",
    "required": ["OriginalRecipient"],
    "properties": {
        "OriginalRecipient": _text(
            "The envelope recipient: the address mail is routed on.",
            "newsletter.k3x9q2m7v5t8w1z4y6b0n3c5d7@in.example.com",
        ),
        "From": _text("The From address.", "news@example.org"),
        "FromName": _text("The From display name.", "Weekly News"),
        "FromFull": {**_POSTMARK_ADDRESS, "description": "The From address and name."},
        "To": _text("The To header (not used for routing)."),
        "ToFull": {"type": "array", "items": _POSTMARK_ADDRESS, "description": "To, parsed."},
        "Cc": _text("The Cc header (not used for routing)."),
        "Subject": _text("The Subject header.", "This week"),
        "MessageID": _text("Postmark's id of the inbound message (the dedupe key)."),
        "Date": _text("The Date header."),
        "TextBody": _text("The text body."),
        "HtmlBody": _text("The HTML body (sanitised before it is stored)."),
        "StrippedTextReply": _text("The reply without quoted text (not used)."),
        "Tag": _text("Postmark tag (not used)."),
        "Headers": {
            "type": "array",
            "description": "Every other header (Message-ID, Received-SPF, Return-Path, ...).",
            "items": {
                "type": "object",
                "properties": {"Name": _text("Header name."), "Value": _text("Header value.")},
            },
        },
        "Attachments": {
            "type": "array",
            "description": "The attachments, base64-encoded.",
            "items": {
                "type": "object",
                "properties": {
                    "Name": _text("File name.", "report.pdf"),
                    "Content": _text("The bytes, base64.", "JVBERi0xLjQK"),
                    "ContentType": _text("Media type.", "application/pdf"),
                    "ContentLength": {"type": "integer", "description": "Size in bytes."},
                    "ContentID": _text("Content-ID of an inline part (`cid:` references)."),
                },
            },
        },
    },
    "additionalProperties": True,
}

MAILGUN_EXAMPLE = {
    "timestamp": "1764958000",
    "token": "7f2c9e1d5b8a4c3f",
    "signature": "a3d5c0c1f3e9b2f4a7d8e6c5b4a39281f0e1d2c3b4a5968778695a4b3c2d1e0f",
    "recipient": "newsletter.k3x9q2m7v5t8w1z4y6b0n3c5d7@in.example.com",
    "sender": "news@example.org",
    "from": "Weekly News <news@example.org>",
    "subject": "This week",
    "body-plain": "Hello!",
}


def _form(schema: dict[str, Any], example: dict[str, Any], *types: str) -> dict[str, Any]:
    return {media_type: {"schema": schema, "example": example} for media_type in types}


def _body(description: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "description": description, "content": content}


MAILGUN = {
    "security": [],
    "requestBody": _body(
        "Mailgun's parsed fields: urlencoded, or multipart when there are attachments."
        + MAILGUN_SIGNATURE,
        _form(
            MAILGUN_FIELDS,
            MAILGUN_EXAMPLE,
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ),
    ),
}
MAILGUN_MIME = {
    "security": [],
    "requestBody": _body(
        "Mailgun's `forward()` to a URL ending in `mime`: the raw message in `body-mime`."
        + MAILGUN_SIGNATURE,
        _form(
            MAILGUN_MIME_FIELDS,
            {
                **{
                    k: v for k, v in MAILGUN_EXAMPLE.items() if k in {*_MAILGUN_SIGNED, "recipient"}
                },
                "body-mime": "From: news@example.org\r\nSubject: This week\r\n\r\nHello!\r\n",
            },
            "multipart/form-data",
        ),
    ),
}
SENDGRID = {
    "security": BASIC,
    "requestBody": _body(
        "SendGrid Inbound Parse, parsed mode or raw mode (`email`).",
        _form(
            SENDGRID_FIELDS,
            {
                "envelope": SENDGRID_FIELDS["properties"]["envelope"]["examples"][0],
                "from": "Weekly News <news@example.org>",
                "subject": "This week",
                "text": "Hello!",
            },
            "multipart/form-data",
        ),
    ),
}
POSTMARK = {
    "security": BASIC,
    "requestBody": _body(
        'Postmark inbound JSON (base64 attachments; "include raw email content" off).',
        {
            "application/json": {
                "schema": POSTMARK_FIELDS,
                "example": {
                    "OriginalRecipient": "newsletter.k3x9q2m7v5t8w1z4y6b0n3c5d7@in.example.com",
                    "FromFull": {"Email": "news@example.org", "Name": "Weekly News"},
                    "Subject": "This week",
                    "MessageID": "a8c1040e-db1c-4e18-ac79-bc5f64c7ce2c",
                    "TextBody": "Hello!",
                    "Headers": [{"Name": "Message-ID", "Value": "<1@example.org>"}],
                    "Attachments": [],
                },
            }
        },
    ),
}
MIME = {
    "security": BASIC,
    "parameters": [
        {
            "name": "recipient",
            "in": "query",
            "required": False,
            "description": "An envelope recipient (repeat the parameter for several). Either "
            "this or `X-Envelope-To` is required; mail without one is refused "
            "`malformed_message`.",
            "schema": {"type": "array", "items": {"type": "string", "maxLength": 998}},
            "style": "form",
            "explode": True,
            "example": ["newsletter.k3x9q2m7v5t8w1z4y6b0n3c5d7@in.example.com"],
        },
        {
            "name": "X-Envelope-To",
            "in": "header",
            "required": False,
            "description": "Envelope recipients, comma-separated (repeatable), instead of "
            "`recipient`.",
            "schema": {"type": "string"},
            "example": "newsletter.k3x9q2m7v5t8w1z4y6b0n3c5d7@in.example.com",
        },
        {
            "name": "sender",
            "in": "query",
            "required": False,
            "description": "The envelope sender (empty for a null sender, which marks "
            "automatic mail). When neither this nor `X-Envelope-From` is given, the From "
            "address stands in.",
            "schema": {"type": "string"},
            "example": "news@example.org",
        },
        {
            "name": "X-Envelope-From",
            "in": "header",
            "required": False,
            "description": "The envelope sender, instead of `sender`.",
            "schema": {"type": "string"},
            "example": "news@example.org",
        },
    ],
    "requestBody": _body(
        "A raw RFC 5322 message, as an MTA received it (`python -m app relay` sends it as "
        "`message/rfc822`). The body is read as the message whatever its declared type.",
        {
            media_type: {
                "schema": {"type": "string", "format": "binary"},
                "example": "From: news@example.org\r\nTo: newsletter@example.org\r\n"
                "Subject: This week\r\nMessage-ID: <1@example.org>\r\n\r\nHello!\r\n",
            }
            for media_type in ("message/rfc822", "application/octet-stream")
        },
    ),
}
