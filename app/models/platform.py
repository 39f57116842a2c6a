from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAt
from app.models.enums import Plan


class Platform(CreatedAt, Base):
    """A tenant. Its id may be the host platform's own id."""

    __tablename__ = "platforms"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    plan: Mapped[Plan] = mapped_column(sa.Enum(Plan, native_enum=False, length=32))
    members_can_add_integrations: Mapped[bool] = mapped_column(default=False)
