"""The ``lmforge`` command line.

:mod:`lmforge.cli.app` builds the root :class:`typer.Typer`; each module named in
``COMMAND_MODULES`` adds its commands through a ``register(app)`` function, and plugins add theirs
through the ``register_commands`` hook. :func:`lmforge.cli.main.main` is the console script.
"""
