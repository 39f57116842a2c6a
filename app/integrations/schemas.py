from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator

from app.api.pagination import CURSOR_EXAMPLE
from app.integrations.addresses import display_address
from app.models import AutomaticMail, DeliveryStatus, Integration, OversizePolicy, Service
from app.schemas import Name, NullRefused, ReadModel, Title, WriteModel

# Every label, the last one too, starts and ends with a letter or digit.
_DOMAIN = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9][a-z0-9-]{0,61}[a-z0-9]"
_SENDER = re.compile(rf"(?:[^\s@<>()\[\],;:\"\\\x00-\x1f\x7f-\x9f]{{1,64}})?@{_DOMAIN}")


def _sender(value: str) -> str:
    value = value.strip().lower()
    if not _SENDER.fullmatch(value):
        raise ValueError("must be an address (name@example.com) or a domain (@example.com)")
    return value


Sender = Annotated[str, Field(max_length=320), AfterValidator(_sender)]
Senders = Annotated[list[Sender], Field(max_length=200)]


class NewGroup(WriteModel):
    name: Name
    """The new group's display name (1 to 200 characters after trimming)."""


class IntegrationCreate(WriteModel):
    """Give exactly one of `group_id` (an existing group) and `new_group` (a group made for it):
    neither, or both, is refused (422)."""

    # "Not both" in the schema; "at least one" only in the description: a oneOf of partial
    # schemas turns the whole body into `Any` in generated clients (openapi-python-client).
    model_config = ConfigDict(
        json_schema_extra={
            "not": {
                "properties": {"group_id": {}, "new_group": {}},
                "required": ["group_id", "new_group"],
            },
            "examples": [
                {"title": "Weekly newsletter", "group_id": "911a1c35-9e0d-4ca7-91e0-dbae774dd041"},
                {"title": "Press review", "new_group": {"name": "Press"}},
            ],
        }
    )

    title: Title
    """Display name shown in the To field of mail clients: 1 to 100 characters after trimming,
    no control characters."""
    group_id: Annotated[uuid.UUID | None, NullRefused] = None
    """The existing group mail is posted to (not with `new_group`)."""
    new_group: Annotated[NewGroup | None, NullRefused] = None
    """A new group dedicated to the integration, managed by the caller (not with `group_id`)."""
    allowed_senders: Senders = []
    """Addresses (`name@example.com`) and domains (`@example.com`, exact) mail is accepted from;
    empty: anyone."""
    oversize_attachments: OversizePolicy = OversizePolicy.reject
    """`reject` mail with an attachment over the limit, or `drop` the oversized files."""
    automatic_mail: AutomaticMail = AutomaticMail.refuse
    """`accept` posts automatic notifications (`Auto-Submitted: auto-generated`: alerts, CI,
    calendars); `refuse` refuses them as `auto_reply`. Automatic replies, bounces and delivery
    reports are refused either way."""
    allowed_senders_verified_only: bool = False
    """`true`: a sender on `allowed_senders` is accepted only when the provider verified it (DKIM
    or DMARC pass for the From domain, or an aligned SPF pass: the post's `author.verified`)."""
    service: Service = Service.email
    """The integration's service; only `email` exists."""

    @model_validator(mode="after")
    def _one_group(self) -> Self:
        if (self.group_id is None) == (self.new_group is None):
            raise ValueError("give exactly one of group_id and new_group")
        return self


class IntegrationUpdate(WriteModel):
    """Only the fields given change; `null` is refused (422) for every field."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"enabled": False}]})

    title: Annotated[Title | None, NullRefused] = None
    """New title; the address stays."""
    enabled: Annotated[bool | None, NullRefused] = None
    """`false` refuses mail with `integration_disabled`."""
    allowed_senders: Annotated[Senders | None, NullRefused] = None
    """Replaces the allowed senders; `[]` accepts anyone."""
    oversize_attachments: Annotated[OversizePolicy | None, NullRefused] = None
    """`reject` or `drop`."""
    automatic_mail: Annotated[AutomaticMail | None, NullRefused] = None
    """`refuse` or `accept` automatic notifications."""
    allowed_senders_verified_only: Annotated[bool | None, NullRefused] = None
    """Accept a listed sender only when the provider verified it."""

    @field_validator(
        "title",
        "enabled",
        "allowed_senders",
        "oversize_attachments",
        "automatic_mail",
        "allowed_senders_verified_only",
        mode="before",
    )
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Only given fields are validated: left out is "keep", null is refused by name.
        if value is None:
            raise ValueError("must not be null")
        return value


class IntegrationStats(ReadModel):
    accepted: int = 0
    """Mails posted (duplicates not counted)."""
    refused: int = 0
    """Mails refused for good."""
    last_received_at: datetime | None = None
    """When the last mail arrived, or null."""


INTEGRATION_EXAMPLE: dict[str, Any] = {
    "id": "6c4be14f-9746-4e1a-968f-3db8f987bb20",
    "service": "email",
    "title": "Weekly newsletter",
    "address": "weekly-newsletter.75ekp282n39radq92i2kcyimtj@in.example.com",
    "display_address": '"Weekly newsletter" '
    "<weekly-newsletter.75ekp282n39radq92i2kcyimtj@in.example.com>",
    "group_id": "911a1c35-9e0d-4ca7-91e0-dbae774dd041",
    "enabled": True,
    "created_by": "alice",
    "created_at": "2026-11-28T19:05:58.531Z",
    "allowed_senders": [],
    "oversize_attachments": "reject",
    "automatic_mail": "refuse",
    "allowed_senders_verified_only": False,
    "previous_addresses": [],
    "stats": {"accepted": 0, "refused": 0, "last_received_at": None},
}


class PreviousAddress(ReadModel):
    address: str
    """An address the integration had before a rotation."""
    valid_until: datetime
    """Mail to it is routed to the integration until then, and refused as
    `unknown_recipient` from then on."""


class AddressRotation(WriteModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"grace_days": 7}]})

    grace_days: Annotated[int, Field(ge=0, le=30)] = 7
    """How many days the old address keeps routing to the integration (0 to 30; 0: it stops
    at once)."""


class IntegrationRead(ReadModel):
    model_config = ConfigDict(json_schema_extra={"examples": [INTEGRATION_EXAMPLE]})

    id: uuid.UUID
    """The integration's id."""
    service: Service
    """Always `email`."""
    title: str
    """Display name."""
    address: str
    """The generated address mail is sent to (cannot be guessed; changes only when an admin
    rotates it)."""
    display_address: str
    """`"title" <address>`, ready to paste into a mail client."""
    group_id: uuid.UUID | None
    """The group mail is posted to; null once that group is deleted."""
    enabled: bool
    """A disabled integration refuses mail (`integration_disabled`)."""
    created_by: str
    """User id of the creator."""
    created_at: datetime
    """When it was created."""
    allowed_senders: list[str]
    """Addresses and `@domains` mail is accepted from; empty: anyone."""
    oversize_attachments: OversizePolicy
    """What happens to mail with an attachment over the limit."""
    automatic_mail: AutomaticMail
    """Whether automatic notifications are posted (`accept`) or refused (`refuse`)."""
    allowed_senders_verified_only: bool
    """Whether a listed sender must be verified by the provider."""
    previous_addresses: list[PreviousAddress] = []
    """Addresses it had before (`rotate-address`), newest first, with when each stops (or
    stopped) routing."""
    stats: IntegrationStats
    """What arrived so far."""

    @classmethod
    def of(
        cls,
        integration: Integration,
        stats: IntegrationStats | None = None,
        previous: list[PreviousAddress] | None = None,
    ) -> Self:
        return cls(
            id=integration.id,
            service=integration.service,
            title=integration.title,
            address=integration.address,
            display_address=display_address(integration.title, integration.address),
            group_id=integration.group_id,
            enabled=integration.enabled,
            created_by=integration.created_by,
            created_at=integration.created_at,
            allowed_senders=list(integration.allowed_senders or []),
            oversize_attachments=integration.oversize_attachments,
            automatic_mail=integration.automatic_mail,
            allowed_senders_verified_only=integration.allowed_senders_verified_only,
            previous_addresses=previous or [],
            stats=stats or IntegrationStats(),
        )


class IntegrationPage(ReadModel):
    items: list[IntegrationRead]
    """This page, newest first."""
    total: int
    """How many integrations match the filter, among those the caller may see."""
    next_cursor: str | None = Field(examples=[CURSOR_EXAMPLE])
    """Pass as `cursor` for the next page; null on the last page."""


# --- the dry run -------------------------------------------------------------------------------

_HEADER_NAME = r"^[!-9;-~]{1,76}$"  # RFC 5322 field name: printable ASCII but ":"


class DescribedAttachment(WriteModel):
    filename: Annotated[str, Field(min_length=1, max_length=400)]
    """The file's name."""
    size: Annotated[int, Field(ge=0, le=2**53)]
    """Its size in bytes (decoded)."""


class DescribedHeader(WriteModel):
    name: Annotated[str, Field(pattern=_HEADER_NAME)]
    """The header's name (`Auto-Submitted`)."""
    value: Annotated[str, Field(max_length=998)]
    """Its value (`auto-generated`)."""


class IntegrationTest(WriteModel):
    """A mail described, not sent: what the rules read of it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "from": "Alice <alice@example.org>",
                    "subject": "Weekly report",
                    "attachments": [{"filename": "report.pdf", "size": 7340032}],
                },
                {
                    "from": "ci@example.org",
                    "subject": "Build 42 failed",
                    "headers": [{"name": "Auto-Submitted", "value": "auto-generated"}],
                    "spf": "pass",
                },
            ]
        }
    )

    from_: Annotated[str, Field(alias="from", min_length=1, max_length=998)]
    """The From header (`alice@example.org` or `Alice <alice@example.org>`)."""
    subject: Annotated[str, Field(max_length=998)] = ""
    """The subject."""
    headers: Annotated[list[DescribedHeader], Field(max_length=100)] = []
    """Other headers, in order (`Auto-Submitted`, `Precedence`, `Content-Type`, ...)."""
    envelope_from: Annotated[str | None, Field(max_length=998)] = None
    """The envelope sender; `""` is a null sender (a bounce); left out or null: the From address."""
    attachments: Annotated[list[DescribedAttachment], Field(max_length=1000)] = []
    """The attachments, by name and size."""
    spf: Annotated[str | None, Field(max_length=32)] = None
    """The provider's SPF verdict (`pass`, `fail`, ...) for the envelope sender."""
    dkim: Annotated[str | None, Field(max_length=200)] = None
    """The provider's DKIM verdicts, as the delivery log shows them (`{@example.org : pass}`)."""


class DryRunOmitted(ReadModel):
    filename: str
    """The file left out."""
    size: int | None
    """Its size in bytes."""
    reason: str
    """Why: `too_large`."""


class DryRunAuthor(ReadModel):
    email: str | None
    """The address the post would show."""
    name: str | None
    """The display name."""
    verified: bool
    """Whether the verdicts given verify it (the rule of `allowed_senders_verified_only`)."""


class IntegrationTestResult(ReadModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "rejected",
                    "reason": "attachment_too_large",
                    "omitted_attachments": [],
                    "author": {"email": "alice@example.org", "name": "Alice", "verified": False},
                },
                {
                    "status": "accepted",
                    "reason": None,
                    "omitted_attachments": [
                        {"filename": "report.pdf", "size": 7340032, "reason": "too_large"}
                    ],
                    "author": {"email": "alice@example.org", "name": "Alice", "verified": False},
                },
            ]
        }
    )

    status: DeliveryStatus
    """`accepted` (it would be posted) or `rejected`."""
    reason: str | None
    """Why it would be refused (a refusal reason), or null."""
    omitted_attachments: list[DryRunOmitted]
    """The files the post would leave out (`oversize_attachments: "drop"`)."""
    author: DryRunAuthor
    """Who the post would show as its author."""
