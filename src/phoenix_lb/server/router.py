"""Longest-prefix routing from a request path to an upstream group."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Router(Generic[T]):
    """Maps path prefixes to targets; the longest matching prefix wins.

    Prefixes match on path-segment boundaries only when they end in '/';
    ``/api`` matches ``/api``, ``/api/x`` and also ``/apix`` (as an nginx
    prefix location does).
    """

    __slots__ = ("_routes", "catch_all")

    def __init__(self, routes: Iterable[tuple[str, T]]) -> None:
        items = [(prefix.encode(), target) for prefix, target in routes]
        items.sort(key=lambda item: len(item[0]), reverse=True)
        self._routes = items
        #: the target when the only route is "/": every path goes there, so
        #: callers may skip normalizing and matching (the common deployment)
        self.catch_all = items[0][1] if len(items) == 1 and items[0][0] == b"/" else None

    def route(self, path: bytes) -> T | None:
        """The target for ``path`` (normalized), or None when no prefix matches."""
        if self.catch_all is not None and path[:1] == b"/":
            return self.catch_all
        for prefix, target in self._routes:
            if path.startswith(prefix):
                return target
        return None
