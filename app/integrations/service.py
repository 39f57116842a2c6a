from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.api.security import Principal
from app.config import Settings
from app.db.base import utcnow
from app.errors import Forbidden, NotFound, PlanLimitReached
from app.events.emit import emit, integration_event
from app.groups.service import GroupAccess, GroupService
from app.inbound.repository import InboundRepository
from app.integrations.addresses import new_address
from app.integrations.dryrun import dry_run
from app.integrations.repository import IntegrationRepository
from app.integrations.schemas import (
    AddressRotation,
    IntegrationCreate,
    IntegrationPage,
    IntegrationRead,
    IntegrationStats,
    IntegrationTest,
    IntegrationTestResult,
    IntegrationUpdate,
    PreviousAddress,
)
from app.models import EventType, Integration, IntegrationAddress, Platform, Service
from app.platforms.repository import PlatformRepository


class IntegrationService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        self.integrations = IntegrationRepository(session)
        self.platforms = PlatformRepository(session)
        self.groups = GroupService(session)

    async def _platform(self, user: Principal, *, lock: bool = False) -> Platform:
        get = self.platforms.get_for_update if lock else self.platforms.get
        platform = await get(user.platform_id)
        if platform is None:
            raise NotFound("No such platform.")
        return platform

    async def create(self, user: Principal, data: IntegrationCreate) -> Integration:
        platform = await self._platform(user, lock=True)  # serialises creators of this platform
        if data.group_id is not None:
            access = await self.groups.access(user, data.group_id)
            if not access.can_add_integration(platform):
                raise Forbidden("You may not add integrations to this group.")
        elif not (user.is_admin or platform.members_can_add_integrations):
            raise Forbidden("Asking for a new group needs the platform-wide setting.")
        limit = platform.plan.integration_limit
        if not platform.plan.allows(await self.integrations.count_live(platform.id) + 1):
            raise PlanLimitReached(
                f"The {platform.plan.value} plan allows {limit} integrations.",
                limit=limit,
                plan=platform.plan.value,
            )
        if data.new_group is not None:
            group = await self.groups.create_dedicated(user, platform, data.new_group.name)
        else:
            group = access.group
        domain = self.settings.inbound_domain or ""
        integration = await self.integrations.add(
            Integration(
                platform_id=platform.id,
                group_id=group.id,
                service=data.service,
                title=data.title,
                address=new_address(data.title, domain),
                enabled=True,
                allowed_senders=list(dict.fromkeys(data.allowed_senders)),
                oversize_attachments=data.oversize_attachments,
                automatic_mail=data.automatic_mail,
                allowed_senders_verified_only=data.allowed_senders_verified_only,
                created_by=user.user_id,
            )
        )
        await emit(self.session, [integration_event(EventType.integration_created, integration)])
        return integration

    async def _visible(self, user: Principal, integration_id: uuid.UUID) -> Integration:
        integration = await self.integrations.get(user.platform_id, integration_id)
        if integration is None:
            raise NotFound("No such integration.")
        if user.is_admin or integration.created_by == user.user_id:
            return integration
        if integration.group_id is not None:
            role = await self.groups.members.role_of(integration.group_id, user.user_id)
            if role is not None and role.value == "manager":
                return integration
        raise NotFound("No such integration.")

    async def _changeable(self, user: Principal, integration_id: uuid.UUID) -> Integration:
        integration = await self._visible(user, integration_id)
        if user.is_admin:
            return integration
        if integration.group_id is not None:
            group = await self.groups.groups.get(user.platform_id, integration.group_id)
            role = await self.groups.members.role_of(integration.group_id, user.user_id)
            if group is not None and GroupAccess(user, group, role).can_add_integration(
                await self._platform(user)
            ):
                return integration
        raise Forbidden("You may no longer change this integration.")

    async def get(self, user: Principal, integration_id: uuid.UUID) -> Integration:
        return await self._visible(user, integration_id)

    async def update(
        self, user: Principal, integration_id: uuid.UUID, data: IntegrationUpdate
    ) -> Integration:
        integration = await self._changeable(user, integration_id)
        changes = data.model_dump(exclude_unset=True)
        if "allowed_senders" in changes:
            changes["allowed_senders"] = list(dict.fromkeys(changes["allowed_senders"]))
        for field, value in changes.items():
            setattr(integration, field, value)
        await self.session.flush()
        return integration

    async def rotate_address(
        self, user: Principal, integration_id: uuid.UUID, data: AddressRotation
    ) -> Integration:
        """A new generated address; the old one keeps routing for ``grace_days``."""
        await self._changeable(user, integration_id)
        integration = await self.integrations.get_for_update(user.platform_id, integration_id)
        if integration is None:
            raise NotFound("No such integration.")
        now = utcnow()
        self.session.add(
            IntegrationAddress(
                address=integration.address,
                integration_id=integration.id,
                platform_id=integration.platform_id,
                valid_until=now + timedelta(days=data.grace_days),
                created_at=now,
            )
        )
        integration.address = new_address(integration.title, self.settings.inbound_domain or "")
        await self.session.flush()
        return integration

    async def delete(self, user: Principal, integration_id: uuid.UUID) -> None:
        integration = await self._changeable(user, integration_id)
        integration.deleted_at = utcnow()
        await self.session.flush()
        await emit(self.session, [integration_event(EventType.integration_deleted, integration)])

    async def dry_run(
        self, user: Principal, integration_id: uuid.UUID, data: IntegrationTest
    ) -> IntegrationTestResult:
        """What the integration would do with a described mail; nothing is stored."""
        integration = await self._visible(user, integration_id)
        route = await InboundRepository(self.session).route(integration.id)
        if route is None:
            raise NotFound("No such integration.")
        return dry_run(data, route, integration.address, self.settings)

    async def list(
        self,
        user: Principal,
        *,
        group_id: uuid.UUID | None,
        service: Service | None,
        limit: int,
        cursor: str | None,
        q: str | None = None,
        enabled: bool | None = None,
    ) -> IntegrationPage:
        if group_id is not None:
            await self.groups.access(user, group_id)  # 404 for a group the caller cannot see
        stmt = self.integrations.visible_stmt(
            user.platform_id,
            user_id=None if user.is_admin else user.user_id,
            group_id=group_id,
            service=service,
            q=q,
            enabled=enabled,
        )
        page = await self.integrations.page(stmt, limit=limit, cursor=cursor)
        return IntegrationPage(
            items=await self.read(page.items),
            total=await self.integrations.count(stmt),
            next_cursor=page.next_cursor,
        )

    async def read(self, integrations: Sequence[Integration]) -> builtins.list[IntegrationRead]:
        ids = [i.id for i in integrations]
        stats = await self.integrations.stats(ids)
        previous = await self.integrations.previous_addresses(ids)
        result = []
        for integration in integrations:
            accepted, refused, last = stats.get(integration.id, (0, 0, None))
            result.append(
                IntegrationRead.of(
                    integration,
                    IntegrationStats(accepted=accepted, refused=refused, last_received_at=last),
                    [
                        PreviousAddress(address=p.address, valid_until=p.valid_until)
                        for p in previous.get(integration.id, [])
                    ],
                )
            )
        return result
