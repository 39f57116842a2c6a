"""Base classes shared by every domain's schemas."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class ReadModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class WriteModel(BaseModel):
    """Request bodies: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


def _plain_text(value: str) -> str:
    # Checked before trimming: "Title\r\n" is refused, not silently cut to "Title".
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters or line breaks")
    value = unicodedata.normalize("NFC", value).strip()
    if not value:
        raise ValueError("must not be blank")
    return value


def bounded_text(max_length: int) -> object:
    def check(value: str) -> str:
        value = _plain_text(value)
        if len(value) > max_length:
            raise ValueError(f"must be at most {max_length} characters")
        return value

    return AfterValidator(check)


Name = Annotated[str, bounded_text(200)]
Title = Annotated[str, bounded_text(100)]
