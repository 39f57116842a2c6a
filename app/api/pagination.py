"""List parameters and the page envelope."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
CURSOR_EXAMPLE = "WyIyMDI2LTExLTI4VDE5OjA1OjU4WiIsIjkxMWExYzM1Il0"


class CursorParams(BaseModel):
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


async def cursor_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, Query(max_length=512, description="Opaque cursor from `next_cursor`.")
    ] = None,
) -> CursorParams:
    return CursorParams(limit=limit, cursor=cursor or None)


Pagination = Annotated[CursorParams, Depends(cursor_params)]


class Page(BaseModel, Generic[T]):
    """One page of a list; follow `next_cursor` for the next one."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    items: list[T]
    """This page's items, newest first."""
    next_cursor: str | None = Field(examples=[CURSOR_EXAMPLE])
    """Pass as `cursor` for the next page; null on the last page."""


class CountedPage(Page[T], Generic[T]):
    total: int
    """How many items the filter matches in all."""
