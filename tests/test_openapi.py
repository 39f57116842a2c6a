"""The committed spec is the one the app serves."""

from __future__ import annotations

import json
from pathlib import Path

from app.cli import openapi_document

SPEC = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def test_committed_spec_matches_the_app() -> None:
    assert SPEC.read_text(encoding="utf-8") == openapi_document(), "run `make openapi`"


def test_every_operation_has_a_unique_id_a_tag_and_documents_problems() -> None:
    spec = json.loads(openapi_document())
    ids = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            ids.append(op["operationId"])
            assert op.get("tags"), (method, path)
            if path.startswith("/v1/"):
                assert "401" in op["responses"], (method, path)
                problem = op["responses"]["401"]["content"]["application/problem+json"]
                assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert len(ids) == len(set(ids))
    assert "Problem" in spec["components"]["schemas"]
