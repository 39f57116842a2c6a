"""Every table; importing this module fills ``Base.metadata`` for Alembic."""

from app.db.base import Base
from app.models.delivery import Delivery
from app.models.enums import (
    DeliveryStatus,
    GroupRole,
    OversizePolicy,
    Plan,
    RejectionReason,
    Role,
    Service,
)
from app.models.group import Group
from app.models.group_member import GroupMember
from app.models.integration import Integration
from app.models.platform import Platform

__all__ = [
    "Base",
    "Delivery",
    "DeliveryStatus",
    "Group",
    "GroupMember",
    "GroupRole",
    "Integration",
    "OversizePolicy",
    "Plan",
    "Platform",
    "RejectionReason",
    "Role",
    "Service",
]
