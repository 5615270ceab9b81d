"""Find out whether a server can listen on its port before the slow model load, not after."""

from __future__ import annotations

import errno
import socket

from ..errors import ConfigError


def check_port_free(host: str, port: int, flag: str = "--server-port") -> None:
    """Raise :class:`ConfigError` when ``host:port`` cannot be bound (in use, or not allowed).

    The socket is bound the way uvicorn binds it (``SO_REUSEADDR``), so a port that uvicorn
    could take passes, even one a stopped server left in TIME_WAIT.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"Port {port} on {host} is already in use (another server, or an lmforge "
                    f"still running?); stop that process or choose another port with {flag}."
                ) from None
            if exc.errno == errno.EACCES:
                raise ConfigError(
                    f"Port {port} needs administrator rights; choose one above 1023 with {flag}."
                ) from None
            raise ConfigError(
                f"Cannot listen on {host}:{port} ({exc.strerror or exc}); check --server-name "
                f"and {flag}."
            ) from None
