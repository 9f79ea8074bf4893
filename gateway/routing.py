"""A Starlette route that records its path template on the scope, for metrics and logs."""

from __future__ import annotations

from starlette.routing import Match, Route
from starlette.types import Scope


class TemplateRoute(Route):
    """Like ``Route``; a match also sets ``scope["route_template"]`` to the route's path."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route_template"] = self.path
        return match, child_scope
