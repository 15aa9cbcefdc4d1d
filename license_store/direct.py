"""Direct dispatch of the API's hottest routes, past Starlette's routing and middleware layers.

Every request through FastAPI crosses the exception middleware, the exit-stack middleware, the
router and the request/response wrappers before its endpoint runs; on the intake lookup, which
must answer thousands of requests a second on two cores (``bench/lookup.py``), those layers were
a fifth of the CPU. :class:`DirectRoutes` sits inside the metrics middleware and, for a request
that one of the given routes matches fully, calls that route's endpoint itself (an endpoint that
takes only the :class:`~starlette.requests.Request`) and turns an exception into the response the
app's own exception handlers give. Anything else goes down the normal stack. The routes stay
declared in the app as they are, for the OpenAPI document and for an app built without this.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["DirectRoutes"]

log = logging.getLogger("govexchange.api")

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Awaitable[Response]]


class DirectRoutes:
    """ASGI middleware: serve ``paths`` (route templates of ``routes``) by calling their
    endpoints directly; everything else goes to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[BaseRoute],
        paths: Sequence[str],
        handlers: dict[Any, Handler],
    ) -> None:
        self.app = app
        found = [route for route in routes if isinstance(route, Route) and route.path in paths]
        missing = set(paths) - {route.path for route in found}
        if missing:
            raise ValueError(f"no route for {', '.join(sorted(missing))}")
        self.routes = found
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    await self._serve(route.endpoint, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _serve(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Exception as error:  # as the app's exception handlers would answer it
            response = await self._handler(error)(request, error)
        await response(scope, receive, send)

    def _handler(self, error: Exception) -> Handler:
        for kind in type(error).__mro__:
            handler = self.handlers.get(kind)
            if handler is not None:
                return handler
        raise error  # no handler, not even for Exception: the server's error path
