"""What the three services share: app factory, probes, metrics, errors, runner.

A service imports its building blocks from here and keeps only its domain in
its own package. Catalog and customer are each a ``Resource`` the kit serves;
the order service has routes of its own on the same helpers.
"""

from services.kit.app import SERVED_BY, ServiceApp, create_app, current_service
from services.kit.bodies import (
    FORM_TYPE,
    form_integer,
    form_number,
    integer,
    is_form,
    json_object,
    number,
    read_form,
    read_json,
    record_object,
    shown,
    text,
)
from services.kit.errors import (
    InvalidFieldsError,
    MalformedBodyError,
    NotFoundError,
    ServiceError,
    UnsupportedMediaTypeError,
    UpstreamError,
)
from services.kit.health import Health, Phase
from services.kit.negotiation import (
    created,
    error_response,
    respond,
    see_other,
    wants_html,
)
from services.kit.records import Records
from services.kit.resources import (
    Field,
    Resource,
    ResourceRecord,
    create_resource_app,
    resource_blueprint,
)
from services.kit.running import EXIT_BAD_SETTINGS, run, serve
from services.kit.settings import Settings, SettingsError
from services.kit.stores import MemoryStore, Record, Store

__all__ = [
    "EXIT_BAD_SETTINGS",
    "FORM_TYPE",
    "SERVED_BY",
    "Field",
    "Health",
    "InvalidFieldsError",
    "MalformedBodyError",
    "MemoryStore",
    "NotFoundError",
    "Phase",
    "Record",
    "Records",
    "Resource",
    "ResourceRecord",
    "ServiceApp",
    "ServiceError",
    "Settings",
    "SettingsError",
    "Store",
    "UnsupportedMediaTypeError",
    "UpstreamError",
    "create_app",
    "create_resource_app",
    "created",
    "current_service",
    "error_response",
    "form_integer",
    "form_number",
    "integer",
    "is_form",
    "json_object",
    "number",
    "read_form",
    "read_json",
    "record_object",
    "resource_blueprint",
    "respond",
    "run",
    "see_other",
    "serve",
    "shown",
    "text",
    "wants_html",
]
