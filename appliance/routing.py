"""Route lookup by path prefix before the regular expressions.

Starlette's router tries its routes in order, one regular expression each: a request for the last
route paid some 40 failed matches (over half of ``GET /health``'s time in the app). Here each prefix
group has a router of its own; a request is handed to the group its path starts with, or to the
routes outside every group. Route objects, their order inside a group, 404/405 answers, trailing-
slash redirects and the lifespan are Starlette's own.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Route, Router
from starlette.types import Receive, Scope, Send


class PrefixRouter(Router):
    def __init__(self, routes: Sequence[BaseRoute], prefixes: Sequence[str], **kwargs: Any) -> None:
        """``prefixes`` end in ``/``; a route belongs to the first prefix its path starts with."""
        super().__init__(routes=list(routes), **kwargs)  # the full list: app.routes, url_path_for
        grouped: dict[str, list[BaseRoute]] = {prefix: [] for prefix in prefixes}
        rest: list[BaseRoute] = []
        for route in routes:
            path = route.path if isinstance(route, Route) else ""
            prefix = next((p for p in prefixes if path.startswith(p)), None)
            (grouped[prefix] if prefix is not None else rest).append(route)
        self._groups = [(prefix, Router(routes=members)) for prefix, members in grouped.items()]
        self._rest = Router(routes=rest)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the lifespan
            await super().app(scope, receive, send)
            return
        if "router" not in scope:
            scope["router"] = self
        path = scope["path"]
        for prefix, router in self._groups:
            if path.startswith(prefix):
                await router.app(scope, receive, send)
                return
        await self._rest.app(scope, receive, send)
