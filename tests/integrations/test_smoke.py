from email.headerregistry import AddressHeader, HeaderRegistry

import httpx

from tests.auth import bearer
from tests.factories import World


async def test_admin_creates_integration_in_existing_group(
    world: World, client: httpx.AsyncClient
) -> None:
    await world.platform("p1", plan="essentials")
    group = await world.group("p1")
    r = await client.post(
        "/v1/integrations",
        json={"title": 'Le "Journal", \\ été', "group_id": group},
        headers=bearer("root", "p1"),
    )
    assert r.status_code == 201, r.text
    body = r.json()
    header = HeaderRegistry()("To", body["display_address"])
    assert isinstance(header, AddressHeader)
    parsed = header.addresses[0]
    assert parsed.display_name == 'Le "Journal", \\ été'
    assert parsed.addr_spec == body["address"]
    assert body["address"].startswith("le-journal-ete.")
    assert body["stats"] == {"accepted": 0, "refused": 0, "last_received_at": None}
