"""RedBeat's web dashboard (docs/web.rst): server-rendered pages and a JSON API over the
schedule in Redis, an ASGI application built by ``create_app``. Needs the ``web`` extra."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
