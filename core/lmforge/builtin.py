"""lmforge's own built-in pieces, registered through the same hooks as external plugins."""

from __future__ import annotations

from .hookspecs import hookimpl
