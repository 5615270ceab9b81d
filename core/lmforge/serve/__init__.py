"""Serving: the OpenAI-compatible API server, its Python client, the proxy and the web UI.

``lmforge.serve(...)`` is the function :func:`lmforge.serve.api.serve`, and ``lmforge.serve`` is
also this package: once the package is imported, Python binds the name ``serve`` on ``lmforge``
to it, so the package itself forwards calls to the function.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .api import serve

        return serve(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
