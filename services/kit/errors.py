"""Errors a service answers with a 4xx status, and the handlers that format them.

Whatever goes wrong, a client gets one sentence saying what was wrong with
its request, as JSON ``{"error": ..., "status": ...}`` or as a small HTML page
for a browser. An exception nobody expected becomes a logged 500 as the very
last resort; every failure a client can cause has a 4xx of its own.
"""

import logging

from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException

from services.kit.negotiation import error_response

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """A request the service cannot fulfil; ``status`` is what the client gets."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedBodyError(ServiceError):
    """The body is not what its content type says (JSON that does not parse)."""

    status = 400


class NotFoundError(ServiceError):
    """No record has the id in the URL."""

    status = 404


class UnsupportedMediaTypeError(ServiceError):
    """The body comes in a content type this endpoint does not take."""

    status = 415


class InvalidFieldsError(ServiceError):
    """The body parses but its fields are missing, mistyped or out of range."""

    status = 422


class UpstreamError(ServiceError):
    """A service this one depends on did not answer in time or answered wrong."""

    status = 503


def describe_http_exception(error: HTTPException) -> str:
    """Return one sentence about a framework error, naming what was asked."""
    code = error.code or 500
    target = f"{request.method} {request.path}"
    if code == 404:
        return f"nothing is served at {request.path}; check the URL"
    if code == 405:
        allowed = ", ".join(sorted(getattr(error, "valid_methods", None) or ()))
        return f"{target} is not allowed; this URL takes {allowed or 'no method'}"
    if code == 413:
        limit = request.max_content_length
        return f"the body of {target} exceeds {limit} bytes; send a smaller one"
    if code == 408:
        return f"the body of {target} did not arrive in time; send it faster"
    return f"{target} failed: {error.name.lower()}"


def install_error_handlers(app: Quart) -> None:
    """Make every error of ``app`` a one-sentence JSON or HTML answer."""

    @app.errorhandler(ServiceError)
    async def on_service_error(error: ServiceError) -> Response:
        logger.debug("%s %s: %s", request.method, request.path, error.message)
        return await error_response(error.status, error.message)

    @app.errorhandler(HTTPException)
    async def on_http_exception(error: HTTPException) -> Response:
        response = await error_response(
            error.code or 500, describe_http_exception(error)
        )
        allowed = getattr(error, "valid_methods", None)
        if allowed:
            response.headers["Allow"] = ", ".join(sorted(allowed))
        return response

    @app.errorhandler(Exception)
    async def on_unexpected(error: Exception) -> Response:
        logger.exception("%s %s failed unexpectedly", request.method, request.path)
        return await error_response(
            500, f"{request.method} {request.path} failed unexpectedly; it is logged"
        )
