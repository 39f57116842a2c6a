"""The inbound rows and the models' tables stay one: the writer's statements take their columns
from the tables, and each row type from its model, so that a new column needs no writer change."""

from __future__ import annotations

from dataclasses import fields

import pytest
import sqlalchemy as sa

from app.inbound.rows import (
    AttachmentRow,
    CounterRow,
    DeliveryRow,
    PostRow,
    Row,
    TokenRow,
    table,
)

ROW_TYPES = [PostRow, AttachmentRow, DeliveryRow, TokenRow, CounterRow]


@pytest.mark.parametrize("row_type", ROW_TYPES, ids=lambda t: t.__name__)
def test_every_field_of_a_row_is_a_column_of_its_table(row_type: type[Row]) -> None:
    attributes = sa.inspect(row_type.model).column_attrs
    assert {f.name for f in fields(row_type)} <= set(attributes.keys())


@pytest.mark.parametrize("row_type", ROW_TYPES, ids=lambda t: t.__name__)
def test_every_column_an_insert_needs_is_a_field_of_its_row(row_type: type[Row]) -> None:
    """A column without a default that may not be NULL must be given by the row: otherwise
    every insert of the writer would fail."""
    given = {f.name for f in fields(row_type)}
    attributes = sa.inspect(row_type.model).column_attrs
    needed = {
        name
        for name, attribute in attributes.items()
        for column in attribute.columns[:1]
        if not column.nullable
        and column.default is None
        and column.server_default is None
        and not (column.primary_key and column.autoincrement is True)
    }
    assert needed <= given, (row_type.__name__, needed - given)
    assert table(row_type) is row_type.model.__table__
