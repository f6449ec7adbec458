"""One URL, two audiences: HTML for a browser, JSON for everyone else.

A client gets HTML only when it prefers ``text/html`` over JSON, as browsers
do; ``application/json``, ``*/*`` or no ``Accept`` at all gets JSON, which
keeps curl, the harness and load generators on the machine-readable side.
"""

from typing import Any

from quart import Response, jsonify, render_template, request

_OFFERED = ("application/json", "text/html")


def wants_html() -> bool:
    """Tell whether the current request prefers HTML to JSON."""
    return request.accept_mimetypes.best_match(_OFFERED) == "text/html"


async def respond(
    data: object,
    *,
    template: str | list[str],
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    """Answer with ``data`` as JSON, or ``template`` rendered for a browser.

    ``template`` may list names; the first that exists is rendered.
    """
    if wants_html():
        html = await render_template(template, **context)
        response = Response(html, status=status, mimetype="text/html")
    else:
        response = jsonify(data)
        response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


async def created(
    data: object, *, location: str, template: str | list[str], **context: Any
) -> Response:
    """Answer 201 with the new record and its ``Location``, as JSON or HTML."""
    return await respond(
        data,
        template=template,
        status=201,
        headers={"Location": location},
        **context,
    )


async def error_response(status: int, message: str) -> Response:
    """Answer with an error sentence as JSON or as a small HTML page."""
    return await respond(
        {"error": message, "status": status},
        template="kit/error.html",
        status=status,
        message=message,
        status_code=status,
    )


def see_other(location: str) -> Response:
    """Send a browser on to ``location`` after a form post (303 See Other)."""
    return Response("", status=303, headers={"Location": location})
