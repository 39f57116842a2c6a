"""Test data, made through the API as a client would make it."""

from __future__ import annotations

from typing import Any

import httpx

from tests.auth import OPERATOR, bearer


class World:
    """Builds platforms, groups, memberships and integrations over HTTP."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def platform(
        self, platform_id: str = "p1", plan: str = "premium", **settings: bool
    ) -> str:
        r = await self.client.post(
            "/v1/platforms",
            json={"id": platform_id, "name": f"Platform {platform_id}", "plan": plan},
            headers=OPERATOR,
        )
        assert r.status_code == 201, r.text
        if settings:
            r = await self.client.patch(
                "/v1/platform/settings", json=settings, headers=bearer("root", platform_id, "admin")
            )
            assert r.status_code == 200, r.text
        return platform_id

    async def group(self, platform_id: str = "p1", name: str = "General", **fields: Any) -> str:
        headers = bearer("root", platform_id, "admin")
        r = await self.client.post("/v1/groups", json={"name": name}, headers=headers)
        assert r.status_code == 201, r.text
        group_id = str(r.json()["id"])
        if fields:
            r = await self.client.patch(f"/v1/groups/{group_id}", json=fields, headers=headers)
            assert r.status_code == 200, r.text
        return group_id

    async def member(
        self, group_id: str, user_id: str, role: str = "member", platform_id: str = "p1"
    ) -> None:
        r = await self.client.put(
            f"/v1/groups/{group_id}/members/{user_id}",
            json={"role": role},
            headers=bearer("root", platform_id, "admin"),
        )
        assert r.status_code in (200, 201), r.text

    async def integration(
        self,
        group_id: str,
        title: str = "Newsletter",
        platform_id: str = "p1",
        user_id: str = "root",
        role: str = "admin",
        **fields: Any,
    ) -> dict[str, Any]:
        r = await self.client.post(
            "/v1/integrations",
            json={"title": title, "group_id": group_id, **fields},
            headers=bearer(user_id, platform_id, role),
        )
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    async def settings(self, platform_id: str = "p1", **settings: bool) -> None:
        """Change the platform's settings as its admin."""
        r = await self.client.patch(
            "/v1/platform/settings", json=settings, headers=bearer("root", platform_id, "admin")
        )
        assert r.status_code == 200, r.text

    async def update_group(self, group_id: str, platform_id: str = "p1", **fields: Any) -> None:
        """Change a group as the platform's admin."""
        r = await self.client.patch(
            f"/v1/groups/{group_id}", json=fields, headers=bearer("root", platform_id, "admin")
        )
        assert r.status_code == 200, r.text

    async def remove_member(self, group_id: str, user_id: str, platform_id: str = "p1") -> None:
        r = await self.client.delete(
            f"/v1/groups/{group_id}/members/{user_id}", headers=bearer("root", platform_id, "admin")
        )
        assert r.status_code == 204, r.text

    async def delete_integration(self, integration_id: str, platform_id: str = "p1") -> None:
        r = await self.client.delete(
            f"/v1/integrations/{integration_id}", headers=bearer("root", platform_id, "admin")
        )
        assert r.status_code == 204, r.text
