"""Base classes shared by every domain's schemas."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The same rule for clients (ECMA-262): no control characters or line breaks, not blank.
_JS_CONTROL = r"\u0000-\u001f\u007f-\u009f\u2028\u2029"
PLAIN_TEXT_PATTERN = rf"^[^{_JS_CONTROL}]*[^\s{_JS_CONTROL}][^{_JS_CONTROL}]*$"


class ReadModel(BaseModel):
    """Response bodies; each field's docstring is its description."""

    model_config = ConfigDict(from_attributes=True, use_attribute_docstrings=True)


def _input_schema(schema: dict[str, Any]) -> None:
    """Request bodies document no `default`: generators make a field with one required (an
    output's field always has its value). The default is said in the description instead."""
    for prop in schema.get("properties", {}).values():
        if "default" in prop:
            default = prop.pop("default")
            if default is not None and default != []:
                said = f"Default: `{json.dumps(default)}`."
                prop["description"] = (
                    f"{prop['description']} {said}" if "description" in prop else said
                )


def _null_refused(schema: dict[str, Any]) -> None:
    variants = [v for v in schema.pop("anyOf", []) if v.get("type") != "null"]
    if len(variants) == 1:
        schema.update(variants[0])
    elif variants:
        schema["anyOf"] = variants


# On an optional field of a request body (`X | None = None`): it may be left out, but `null` is
# refused (422), so the schema does not offer it.
NullRefused = Field(json_schema_extra=_null_refused)


class WriteModel(BaseModel):
    """Request bodies: unknown fields are refused; each field's docstring is its description."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        _input_schema(handler.resolve_ref_schema(schema))
        return schema


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


def bounded_text_schema(max_length: int) -> WithJsonSchema:
    """What `bounded_text` enforces, for clients (the server counts after trimming)."""
    return WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": max_length,
            "pattern": PLAIN_TEXT_PATTERN,
        }
    )


Name = Annotated[str, bounded_text(200), bounded_text_schema(200)]
Title = Annotated[str, bounded_text(100), bounded_text_schema(100)]
