"""Reading and checking request bodies, strictly, with one-sentence errors.

Bodies come from anywhere, so nothing here trusts them: bytes that are not
UTF-8, JSON that does not parse or nests too deep, numbers that are not
finite, booleans where numbers belong and fields nobody asked for are each
refused with a 4xx naming the field and the value.
"""

import json
from collections.abc import Collection, Mapping
from typing import NoReturn
from urllib.parse import parse_qsl

from quart import request
from werkzeug.datastructures import MultiDict

from services.kit.errors import (
    InvalidFieldsError,
    MalformedBodyError,
    UnsupportedMediaTypeError,
)

#: The content type of an HTML form post.
FORM_TYPE = "application/x-www-form-urlencoded"
#: The longest value shown back to the client in an error message.
_SHOWN = 40


def shown(value: object) -> str:
    """Return ``value`` as short text to quote in an error message."""
    text = json.dumps(value) if _json_safe(value) else repr(value)
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 3]}..."


def _json_safe(value: object) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def is_form() -> bool:
    """Tell whether the current request carries an HTML form."""
    return request.mimetype == FORM_TYPE


async def read_json() -> object:
    """Return the JSON body of the current request, or raise a 4xx error."""
    if not request.is_json:
        given = request.mimetype or "no content type"
        raise UnsupportedMediaTypeError(
            f"{request.method} {request.path} takes application/json, not {given}"
        )
    raw = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as e:
        raise MalformedBodyError(
            f"the body of {request.method} {request.path} is not valid JSON"
        ) from e


async def read_form() -> MultiDict[str, str]:
    """Return the HTML form of the current request, or raise a 4xx error.

    Names and values are percent-decoded to bytes first and those bytes
    must be UTF-8: ``%ff`` is refused, not turned into a replacement
    character.
    """
    if not is_form():
        given = request.mimetype or "no content type"
        raise UnsupportedMediaTypeError(
            f"{request.method} {request.path} takes {FORM_TYPE}, not {given}"
        )
    raw = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    return _parse_form(raw, path=request.path)


def _parse_form(raw: bytes, *, path: str) -> MultiDict[str, str]:
    """Return the fields of an urlencoded form body, all of them strict UTF-8."""
    # Latin-1 maps each byte to one character and back, so the pairs keep
    # the very bytes that were sent, percent-decoded, for the strict check.
    pairs = parse_qsl(
        raw.decode("latin-1"),
        keep_blank_values=True,
        encoding="latin-1",
        errors="strict",
    )
    fields: MultiDict[str, str] = MultiDict()
    for raw_name, raw_value in pairs:
        try:
            name = raw_name.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedBodyError(
                f"the form sent to {path} has a field name that is not UTF-8: "
                f"{shown(raw_name.encode('latin-1'))}"
            ) from e
        try:
            value = raw_value.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedBodyError(
                f"the form field {shown(name)} sent to {path} is not UTF-8"
            ) from e
        fields.add(name, value)
    return fields


def json_object(
    value: object, *, required: Collection[str], optional: Collection[str] = ()
) -> dict[str, object]:
    """Return ``value`` as an object that has the required fields and no others."""
    if not isinstance(value, dict):
        raise InvalidFieldsError(f"the body must be a JSON object, not {shown(value)}")
    missing = [name for name in required if name not in value]
    if missing:
        raise InvalidFieldsError(f"the body lacks the field {missing[0]!r}")
    allowed = set(required) | set(optional)
    unknown = sorted(name for name in value if name not in allowed)
    if unknown:
        raise InvalidFieldsError(
            f"the body has the unknown field {shown(unknown[0])}; "
            f"the fields are {', '.join(sorted(allowed))}"
        )
    return value


def record_object(
    value: object, *, fields: Collection[str], record_id: int | None
) -> dict[str, object]:
    """Return ``value`` as an object with ``fields`` and no id but the URL's.

    A create (``record_id`` None) takes no id; a replace may repeat the id in
    its URL but not name another.
    """
    data = json_object(value, required=fields, optional=("id",) if record_id else ())
    given = data.get("id", record_id)
    if isinstance(given, bool) or given != record_id:
        raise InvalidFieldsError(
            f"the body's id {shown(given)} differs from {record_id}"
        )
    return data


def text(data: Mapping[str, object], name: str, *, max_length: int = 200) -> str:
    """Return the field ``name`` as a non-empty string, trimmed."""
    value = data.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise InvalidFieldsError(
            f"{name} must be a non-empty string of at most {max_length} "
            f"characters, not {shown(value)}"
        )
    return value.strip()


def number(data: Mapping[str, object], name: str, *, maximum: float) -> float:
    """Return the field ``name`` as a finite number from 0 to ``maximum``."""
    value = data.get(name)
    # The range check also refuses NaN and the infinities.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= maximum
    ):
        raise InvalidFieldsError(
            f"{name} must be a number from 0 to {maximum:.15g}, not {shown(value)}"
        )
    return value


def integer(
    data: Mapping[str, object], name: str, *, minimum: int = 1, maximum: int = 2**53
) -> int:
    """Return the field ``name`` as an integer from ``minimum`` to ``maximum``."""
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidFieldsError(f"{name} must be an integer, not {shown(value)}")
    if not minimum <= value <= maximum:
        raise InvalidFieldsError(
            f"{name} must be from {minimum} to {maximum}, not {shown(value)}"
        )
    return value


def form_number(form: Mapping[str, str], name: str) -> object:
    """Return a form field as a number when it reads as one, else as sent."""
    value = form.get(name, "")
    try:
        return float(value)
    except ValueError:
        return value


def form_integer(form: Mapping[str, str], name: str) -> object:
    """Return a form field as an integer when it reads as one, else as sent."""
    value = form.get(name, "").strip()
    digits = value.isascii() and value.isdigit() and len(value) <= 18
    return int(value) if digits else value
