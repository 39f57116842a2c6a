from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Response

from app.api.deps import CurrentUser, SessionDep, SettingsDep
from app.api.pagination import Pagination
from app.api.problems import responses
from app.integrations.schemas import (
    AddressRotation,
    IntegrationCreate,
    IntegrationPage,
    IntegrationRead,
    IntegrationTest,
    IntegrationTestResult,
    IntegrationUpdate,
)
from app.integrations.service import IntegrationService
from app.models import Service as ServiceName

# No control characters (PostgreSQL refuses NUL in text; none can be in a title or address).
SEARCH_PATTERN = r"^[^\u0000-\u001f\u007f]*$"


async def integration_service(session: SessionDep, settings: SettingsDep) -> IntegrationService:
    return IntegrationService(session, settings)


Service = Annotated[IntegrationService, Depends(integration_service)]

router = APIRouter(prefix="/v1/integrations", tags=["integrations"], responses=responses(401))


@router.post("", status_code=201, responses=responses(403, 404, "plan_limit_reached", 422))
async def create_integration(
    body: IntegrationCreate, user: CurrentUser, service: Service
) -> IntegrationRead:
    """Bind a generated address to an existing group (`group_id`) or a new one (`new_group`).

    409 `plan_limit_reached` when the platform's plan allows no more integrations.
    """
    integration = await service.create(user, body)
    return (await service.read([integration]))[0]


@router.get("", status_code=200, responses=responses(404, 422))
async def list_integrations(
    user: CurrentUser,
    service: Service,
    page: Pagination,
    group_id: Annotated[uuid.UUID | None, Query(description="Only this group's.")] = None,
    service_name: Annotated[
        ServiceName | None, Query(alias="service", description="Only this service's.")
    ] = None,
    q: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=SEARCH_PATTERN,
            description="Only those whose title or address contains this text, whatever its "
            "case (`%` and `_` match themselves).",
            examples=["newsletter"],
        ),
    ] = None,
    enabled: Annotated[
        bool | None,
        Query(
            description="Only enabled (`true`) or only disabled (`false`) ones.", examples=[True]
        ),
    ] = None,
) -> IntegrationPage:
    """Integrations the caller may see, newest first; `total` counts all that match the filter.

    `q` searches titles and addresses (a forgotten address, or a title among many); `enabled`
    filters. A `group_id` the caller cannot see answers 404."""
    return await service.list(
        user,
        group_id=group_id,
        service=service_name,
        limit=page.limit,
        cursor=page.cursor,
        q=q or None,
        enabled=enabled,
    )


@router.get("/{integration_id}", status_code=200, responses=responses(404, 422))
async def get_integration(
    integration_id: uuid.UUID, user: CurrentUser, service: Service
) -> IntegrationRead:
    """An integration the caller may see, with its address and what arrived so far."""
    return (await service.read([await service.get(user, integration_id)]))[0]


@router.patch("/{integration_id}", status_code=200, responses=responses(403, 404, 422))
async def update_integration(
    integration_id: uuid.UUID, body: IntegrationUpdate, user: CurrentUser, service: Service
) -> IntegrationRead:
    """Change the title (the address stays), `enabled`, `allowed_senders` or the oversize policy."""
    return (await service.read([await service.update(user, integration_id, body)]))[0]


@router.delete("/{integration_id}", status_code=204, responses=responses(403, 404, 422))
async def delete_integration(
    integration_id: uuid.UUID, user: CurrentUser, service: Service
) -> Response:
    """Delete an integration: its address refuses mail from now on; posts already made stay."""
    await service.delete(user, integration_id)
    return Response(status_code=204)


@router.post("/{integration_id}/test", status_code=200, responses=responses(404, 422))
async def test_integration(
    integration_id: uuid.UUID, body: IntegrationTest, user: CurrentUser, service: Service
) -> IntegrationTestResult:
    """A dry run: what the integration would do with the mail described, decided by the same
    rules as real mail (disabled, automatic mail, allowed senders and their verdicts, attachment
    sizes). Nothing is stored, nothing is posted; rate limits and duplicates are left out (they
    depend on other mail). Whoever may see the integration may test it."""
    return await service.dry_run(user, integration_id, body)


@router.post(
    "/{integration_id}/rotate-address", status_code=200, responses=responses(403, 404, 422)
)
async def rotate_integration_address(
    integration_id: uuid.UUID,
    user: CurrentUser,
    service: Service,
    body: Annotated[AddressRotation, Body(default_factory=AddressRotation)],
) -> IntegrationRead:
    """Give the integration a new generated address (when the old one leaked). The old one keeps
    routing to it for `grace_days` (default 7; the body may be left out), listed in
    `previous_addresses` with its `valid_until`; from then on its mail is refused as
    `unknown_recipient`. Whoever may change the integration may rotate its address; the plan's
    count is unchanged."""
    rotated = await service.rotate_address(user, integration_id, body)
    return (await service.read([rotated]))[0]
