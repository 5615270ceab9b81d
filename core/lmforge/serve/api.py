"""Python API of the server: :func:`serve` starts one, :func:`client` talks to one.

::

    import lmforge
    api = lmforge.serve(None, server_port=23333)          # the demo model, in a subprocess
    model = api.available_models[0]
    for reply in api.chat_completions_v1(model=model, messages=[{"role": "user", "content": "hi"}]):
        print(reply["choices"][0]["message"]["content"])
    api.close()                                            # also stops the server it started
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from ..errors import LmforgeError


class APIClientError(LmforgeError):
    """The server answered with an error; the message is the server's, ``code`` its error code
    (``context_length_exceeded``, ``invalid_api_key``, ...) when it gave one."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ServerUnreachableError(LmforgeError):
    """The server could not be reached, or stopped answering; the message says which URL."""


@contextmanager
def _transport_errors(url: str) -> Iterator[None]:
    """Turn httpx's connection errors into one sentence about the server."""
    try:
        yield
    except httpx.ConnectError as exc:
        raise ServerUnreachableError(
            f"Cannot reach the api_server at {url} ({_reason(exc)}); is it running? Start one "
            "with `lmforge serve api_server`, or check the URL."
        ) from None
    except httpx.TransportError as exc:  # it went away mid-answer, or took too long
        raise ServerUnreachableError(
            f"The api_server at {url} stopped answering ({_reason(exc)}); check that it is "
            "still running."
        ) from None


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.rsplit("] ", 1)[-1]  # "[Errno 111] Connection refused" -> "Connection refused"


def _base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    return url if "://" in url else f"http://{url}"


def _body(fields: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    # Unset fields are left out so that the server's defaults apply.
    return {k: v for k, v in {**fields, **extra}.items() if v is not None}


class APIClient:
    """A synchronous client of lmforge's (and LMDeploy's) OpenAI-compatible server.

    The ``*_v1`` methods are generators: with ``stream=True`` they yield each chunk as a dict,
    otherwise the one whole response. An error response raises :class:`APIClientError`.
    """

    def __init__(
        self,
        api_server_url: str,
        api_key: str | None = None,
        timeout: float | None = 600.0,
        process: subprocess.Popen | None = None,
    ) -> None:
        self.api_server_url = _base_url(api_server_url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.api_server_url, headers=headers, timeout=timeout)
        self.process = process

    # ------------------------------------------------------------------ endpoints

    @property
    def available_models(self) -> list[str]:
        """Ids of the models the server serves."""
        with _transport_errors(self.api_server_url):
            response = self._http.get("/v1/models")
        self._raise_for_error(response)
        return [card["id"] for card in response.json()["data"]]

    def chat_completions_v1(
        self,
        model: str,
        messages: str | list[dict[str, Any]],
        temperature: float | None = None,
        top_p: float | None = None,
        n: int | None = None,
        max_tokens: int | None = None,
        stop: str | list[str] | None = None,
        stream: bool = False,
        **kwargs: Any,
    ) -> Iterator[dict[str, Any]]:
        """``POST /v1/chat/completions``; other OpenAI fields (seed, logprobs, top_k, ...) go
        in ``kwargs``. A string ``messages`` is one user message."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        fields = dict(
            model=model,
            messages=messages,
            temperature=temperature,
            top_p=top_p,
            n=n,
            max_tokens=max_tokens,
            stop=stop,
            stream=stream,
        )
        yield from self._post("/v1/chat/completions", _body(fields, kwargs), stream, sse=True)

    def completions_v1(
        self,
        model: str,
        prompt: str | list[str] | list[int] | list[list[int]],
        temperature: float | None = None,
        top_p: float | None = None,
        n: int | None = None,
        max_tokens: int | None = None,
        stop: str | list[str] | None = None,
        stream: bool = False,
        **kwargs: Any,
    ) -> Iterator[dict[str, Any]]:
        """``POST /v1/completions`` (raw text, no chat template)."""
        fields = dict(
            model=model,
            prompt=prompt,
            temperature=temperature,
            top_p=top_p,
            n=n,
            max_tokens=max_tokens,
            stop=stop,
            stream=stream,
        )
        yield from self._post("/v1/completions", _body(fields, kwargs), stream, sse=True)

    def chat_interactive_v1(
        self,
        prompt: str | list[dict[str, Any]],
        session_id: int = -1,
        interactive_mode: bool = False,
        stream: bool = False,
        stop: str | list[str] | None = None,
        request_output_len: int | None = None,
        **kwargs: Any,
    ) -> Iterator[dict[str, Any]]:
        """``POST /v1/chat/interactive``: with ``interactive_mode=True`` the server keeps the
        conversation of ``session_id``, so each call sends only the new message."""
        fields = dict(
            prompt=prompt,
            session_id=session_id,
            interactive_mode=interactive_mode,
            stream=stream,
            stop=stop,
            request_output_len=request_output_len,
        )
        yield from self._post("/v1/chat/interactive", _body(fields, kwargs), stream, sse=False)

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _raise_for_error(response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            error = response.json()["error"]
            message, code = error["message"], error.get("code")
        except (ValueError, KeyError, TypeError, AttributeError):
            message, code = response.text or response.reason_phrase, None
        raise APIClientError(response.status_code, message, code)

    def _post(self, path: str, body: dict, stream: bool, sse: bool) -> Iterator[dict[str, Any]]:
        with _transport_errors(self.api_server_url):
            yield from self._post_unchecked(path, body, stream, sse)

    def _post_unchecked(self, path: str, body: dict, stream: bool,
                        sse: bool) -> Iterator[dict[str, Any]]:
        if not stream:
            response = self._http.post(path, json=body)
            self._raise_for_error(response)
            yield response.json()
            return
        with self._http.stream("POST", path, json=body) as response:
            if response.status_code >= 400:
                response.read()
                self._raise_for_error(response)
            for line in response.iter_lines():
                if sse:
                    if not line.startswith("data:"):
                        continue
                    line = line[len("data:") :].strip()
                    if line == "[DONE]":
                        return
                if line.strip():
                    yield json.loads(line)

    def close(self) -> None:
        """Close the connection pool, and stop the server if :func:`serve` started it."""
        self._http.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> APIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def client(api_server_url: str, api_key: str | None = None, **kwargs: Any) -> APIClient:
    """A client of the server at ``api_server_url`` (``host:port`` or a full URL)."""
    return APIClient(api_server_url, api_key=api_key, **kwargs)


# Engine config field -> api_server flag, for passing a config object to the subprocess.
_CONFIG_FLAGS = {
    "tp": "--tp",
    "session_len": "--session-len",
    "max_batch_size": "--max-batch-size",
    "cache_max_entry_count": "--cache-max-entry-count",
    "kv_cache_memory": "--kv-cache-memory",
    "max_kv_tokens": "--max-kv-tokens",
    "block_size": "--cache-block-seq-len",
    "cache_block_seq_len": "--cache-block-seq-len",
    "max_prefill_token_num": "--max-prefill-token-num",
    "quant_policy": "--quant-policy",
    "model_format": "--model-format",
    "rope_scaling_factor": "--rope-scaling-factor",
    "dtype": "--dtype",
    "device": "--device",
    "load_format": "--load-format",
}


def _config_flags(config: Any) -> list[str]:
    args: list[str] = []
    for name, flag in _CONFIG_FLAGS.items():
        value = getattr(config, name, None)
        if value is not None and flag not in args:
            args += [flag, str(value)]
    if getattr(config, "enable_prefix_caching", False):
        args.append("--enable-prefix-caching")
    return args


def _template_json(config: Any) -> str:
    if hasattr(config, "to_json"):
        return config.to_json()
    return json.dumps({k: v for k, v in dataclasses.asdict(config).items() if v is not None})


def serve(
    model_path: str | None = None,
    model_name: str | None = None,
    backend: str = "pytorch",
    backend_config: Any = None,
    chat_template_config: Any = None,
    server_name: str = "0.0.0.0",
    server_port: int = 23333,
    log_level: str = "ERROR",
    api_keys: list[str] | str | None = None,
    ssl: bool = False,
    timeout: float = 600.0,
    tool_call_parser: str | None = None,
) -> APIClient:
    """Start ``lmforge serve api_server`` in a subprocess and return a client once it is ready.

    Waits up to ``timeout`` seconds for ``/health`` to answer; if the server exits first, raises
    :class:`LmforgeError` with its last error line. ``client.close()`` stops the server.
    """
    args = [sys.executable, "-m", "lmforge.cli.main", "serve", "api_server"]
    args += [model_path] if model_path else []
    args += ["--backend", backend, "--server-name", server_name, "--server-port", str(server_port)]
    args += ["--log-level", log_level]
    args += ["--model-name", model_name] if model_name else []
    args += ["--ssl"] if ssl else []
    args += ["--tool-call-parser", tool_call_parser] if tool_call_parser else []
    if api_keys:
        args += ["--api-keys", *([api_keys] if isinstance(api_keys, str) else api_keys)]
    if backend_config is not None:
        args += _config_flags(backend_config)
    if chat_template_config is not None:
        args += ["--chat-template", _template_json(chat_template_config)]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, env=os.environ.copy())
    host = "127.0.0.1" if server_name in ("0.0.0.0", "::", "") else server_name
    url = f"{'https' if ssl else 'http'}://{host}:{server_port}"
    key = api_keys if isinstance(api_keys, str) else (api_keys[0] if api_keys else None)
    _wait_healthy(url, process, log, timeout)
    return APIClient(url, api_key=key, process=process)


def _wait_healthy(url: str, process: subprocess.Popen, log: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            lines = [ln for ln in log.read().decode(errors="replace").splitlines() if ln.strip()]
            reason = lines[-1].strip() if lines else "no output"
            raise LmforgeError(f"The api_server exited with code {process.returncode}: {reason}")
        try:
            if httpx.get(f"{url}/health", timeout=2.0, verify=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    process.terminate()
    raise LmforgeError(f"The api_server did not answer at {url} within {timeout:.0f} s.")
