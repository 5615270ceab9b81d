"""The built-in architecture adapters (registered in :mod:`lmforge.builtin`)."""
