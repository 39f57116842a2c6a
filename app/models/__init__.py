"""Every table; importing this module fills ``Base.metadata`` for Alembic."""

from app.db.base import Base
from app.models.delivery import Delivery
from app.models.enums import (
    AutomaticMail,
    DeliveryStatus,
    GroupRole,
    OversizePolicy,
    Plan,
    RejectionReason,
    Role,
    Service,
)
from app.models.event import (
    Event,
    EventAttempt,
    EventEndpoint,
    EventMessage,
    EventType,
    MessageStatus,
)
from app.models.group import Group
from app.models.group_member import GroupMember
from app.models.inbound import ProviderToken, RateCounter
from app.models.integration import Integration, IntegrationAddress
from app.models.platform import Platform, PlatformDeletion
from app.models.post import Attachment, Post

__all__ = [
    "Attachment",
    "AutomaticMail",
    "Base",
    "Delivery",
    "DeliveryStatus",
    "Event",
    "EventAttempt",
    "EventEndpoint",
    "EventMessage",
    "EventType",
    "Group",
    "GroupMember",
    "GroupRole",
    "Integration",
    "IntegrationAddress",
    "MessageStatus",
    "OversizePolicy",
    "Plan",
    "Platform",
    "PlatformDeletion",
    "Post",
    "ProviderToken",
    "RateCounter",
    "RejectionReason",
    "Role",
    "Service",
]
