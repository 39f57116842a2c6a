from email.headerregistry import HeaderRegistry

from tests.auth import bearer


async def test_admin_creates_integration_in_existing_group(world, client):
    await world.platform("p1", plan="essentials")
    group = await world.group("p1")
    r = await client.post(
        "/v1/integrations",
        json={"title": 'Le "Journal", \\ été', "group_id": group},
        headers=bearer("root", "p1"),
    )
    assert r.status_code == 201, r.text
    body = r.json()
    parsed = HeaderRegistry()("To", body["display_address"]).addresses[0]
    assert parsed.display_name == 'Le "Journal", \\ été'
    assert parsed.addr_spec == body["address"]
    assert body["address"].startswith("le-journal-ete.")
    assert body["stats"] == {"accepted": 0, "refused": 0, "last_received_at": None}
