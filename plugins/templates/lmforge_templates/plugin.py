"""Registers this plugin's pieces with lmforge."""

from lmforge import hookimpl  # noqa: F401
