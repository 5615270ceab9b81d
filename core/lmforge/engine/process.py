"""The engine in its own process: the server's front end keeps HTTP, chat templates and
tokenization, and the engine process schedules, runs steps and detokenizes, with its own Python
interpreter, so neither waits for the other's global lock.

The two exchange plain data over a pair of pipes, one msgpack message at a time: the front end
sends commands (add a request as token ids and sampling parameters, abort one, score tokens,
zero the counters, close; a request's grammar travels as its source, checked by the front end
and compiled again here from a cache), and the engine sends, once per step, every output the
step produced with the engine's statistics. :class:`EngineProcessClient` offers the front end
the same interface as the in-process :class:`~lmforge.engine.loop.EngineLoop`.

If the engine process dies, every waiting request ends with an error naming the exit code, the
client reports the engine as failed (the server's ``/health`` then says so), and nothing is left
running: the process also exits when the front end's pipe closes.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import multiprocessing
import threading
from concurrent.futures import Future
from typing import Any

import msgpack

from ..errors import EngineError, LmforgeError
from ..messages import GenerationConfig
from ..structured import grammar_from_response_format
from ..structured.compiler import GrammarCompiler
from .gc_tuning import settle_after_start_up
from .outputs import GenOut
from .request import Request

logger = logging.getLogger(__name__)

# Command and message kinds.
ADD, ABORT, SCORE, RESET, CLOSE = "add", "abort", "score", "reset", "close"
READY, FAILED, ADMITTED, OUTPUTS, RESULT = "ready", "failed", "admitted", "outputs", "result"


def _pack(*message: Any) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def _unpack(data: bytes) -> list:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _out_fields(out: GenOut) -> list:
    logprobs = None if out.logprobs is None else [list(d.items()) for d in out.logprobs]
    return [out.text, out.token_ids, out.input_token_len, out.generate_token_len,
            out.finish_reason, out.index, logprobs, out.error, out.cached_token_len]


def _gen_out(fields: list) -> GenOut:
    text, ids, inp, gen, reason, index, logprobs, error, cached = fields
    if logprobs is not None:
        logprobs = [dict((int(k), v) for k, v in d) for d in logprobs]
    return GenOut(text, ids, inp, gen, reason, index, logprobs, error, cached)


# ---------------------------------------------------------------------------------- engine side


def engine_main(commands, outputs, build_args: dict, log_level: int | None = None) -> None:
    """The engine process: build the engine, say it is ready, then serve commands and steps
    until told to close or the front end goes away. ``log_level`` is the front end's level for
    lmforge's records (a spawned process starts without its logging set up)."""
    from .builder import build_llm_engine

    if log_level is not None:
        from ..cli.console import configure_logging

        configure_logging(logging.getLevelName(log_level))
    try:
        engine = build_llm_engine(**build_args)
    except BaseException as exc:  # the front end raises it with the same one sentence
        outputs.send_bytes(_pack(FAILED, type(exc).__name__, str(exc)))
        return
    settle_after_start_up()  # a full collection of the model's objects would stall steps
    outputs.send_bytes(_pack(READY, {"vocab_size": engine.vocab_size}))
    grammars = GrammarCompiler(engine.tokenizer, engine.vocab_size, engine.eos_token_ids)
    # The token table is ready by the first constrained request, which then compiles in ~1 ms.
    warm = threading.Thread(target=grammars.warm, name="lmforge-grammar-warm", daemon=True)
    warm.start()
    outbox: list = []
    try:
        _serve(engine, commands, outputs, outbox, grammars)
    except (EOFError, OSError, BrokenPipeError):  # the front end is gone
        pass
    finally:
        engine.abort_all()
        engine.runner.close()
        # A thread still inside llguidance's native code while the interpreter shuts down
        # crashes the process (SIGSEGV on a close right after start-up): let it finish.
        warm.join(60)


def _serve(engine, commands, outputs, outbox: list, grammars: GrammarCompiler) -> None:
    busy = False
    while True:
        # Block for commands only when there is nothing to step or to send (an abort may
        # have left outputs, or ended the last request).
        while commands.poll(0 if engine.has_work or outbox or busy else None):
            if not _apply(engine, _unpack(commands.recv_bytes()), outputs, outbox, grammars):
                return
        if engine.has_work:
            try:
                engine.step()
            except Exception as exc:  # a failure outside a step: end what is running
                logger.exception("engine step failed")
                engine.abort_all("error", f"{type(exc).__name__}: {exc}")
        # Going idle (the last step done, or the last request aborted) sends the final
        # statistics even with no output, else the front end's figures would stay stale.
        went_idle = busy and not engine.has_work
        busy = engine.has_work
        if outbox or went_idle:
            outputs.send_bytes(_pack(OUTPUTS, outbox, engine.stats()))
            outbox.clear()


def _apply(engine, command: list, outputs, outbox: list, grammars: GrammarCompiler) -> bool:
    kind = command[0]
    if kind == ADD:
        _, request_id, ids, config, adapter, allow_prefix_match = command
        try:
            gen_config = GenerationConfig(**config)
            grammar = grammar_from_response_format(gen_config.response_format)
            request = Request(ids, gen_config,
                              lambda out, rid=request_id: outbox.append([rid, _out_fields(out)]),
                              request_id=request_id, adapter=adapter,
                              allow_prefix_match=allow_prefix_match,
                              grammar=grammars.compile(grammar) if grammar else None)
            engine.add_request(request)
            outputs.send_bytes(_pack(ADMITTED, request_id, None, None))
        except Exception as exc:
            outputs.send_bytes(_pack(ADMITTED, request_id, type(exc).__name__, str(exc)))
    elif kind == ABORT:
        engine.abort_request(command[1])
    elif kind == SCORE:
        _, call_id, ids = command
        try:
            outputs.send_bytes(_pack(RESULT, call_id, engine.score(ids), None, None))
        except Exception as exc:
            outputs.send_bytes(_pack(RESULT, call_id, None, type(exc).__name__, str(exc)))
    elif kind == RESET:  # answered with the fresh statistics, which the front end keeps
        engine.counters.reset()
        outputs.send_bytes(_pack(RESULT, command[1], engine.stats(), None, None))
    elif kind == CLOSE:
        return False
    return True


# ---------------------------------------------------------------------------------- front end


def _error(class_name: str, message: str) -> Exception:
    """The engine's exception as the same lmforge error class (one sentence for the user)."""
    from .. import errors

    cls = getattr(errors, class_name, None)
    if isinstance(cls, type) and issubclass(cls, LmforgeError):
        return cls(message)
    return EngineError(message)


class EngineProcessClient:
    """Starts the engine process and talks to it; the front end's side of the pipes."""

    def __init__(self, build_args: dict, timeout: float | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._commands, engine_commands = ctx.Pipe(duplex=False)[::-1]
        engine_outputs_recv, engine_outputs_send = ctx.Pipe(duplex=False)
        self._outputs = engine_outputs_recv
        # Not a daemon: the engine may start worker processes of its own (tensor parallelism).
        level = logging.getLogger("lmforge").level or None  # set by the CLI, or by the user
        self.process = ctx.Process(target=engine_main, name="lmforge-engine",
                                   args=(engine_commands, engine_outputs_send, build_args, level))
        self.process.start()
        engine_commands.close()
        engine_outputs_send.close()
        self._send_lock = threading.Lock()
        self._requests: dict[int, Request] = {}
        self._open: dict[int, set[int]] = {}  # each request's unfinished choices
        self._admissions: dict[int, Future] = {}
        self._calls: dict[int, Future] = {}
        self._call_ids = itertools.count()
        self._stats: dict[str, Any] = {}
        self.error: str | None = None  # why the engine process stopped, once it has
        self._closing = False
        # One thread at a time waits for the process: two waitpid calls race, and the loser
        # would take the process for alive after it was reaped.
        self._join_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._ready(timeout)
        self._reader = threading.Thread(target=self._read, name="lmforge-engine-reader",
                                        daemon=True)
        self._reader.start()

    def _ready(self, timeout: float | None) -> None:
        if not self._outputs.poll(timeout):
            self.close()
            raise EngineError(f"The engine process did not start within {timeout:.0f} s.")
        try:
            message = _unpack(self._outputs.recv_bytes())
        except EOFError:
            self._join(5)
            raise EngineError(
                f"The engine process exited with code {self.process.exitcode} while loading "
                "the model; run with --log-level debug to see why."
            ) from None
        if message[0] == FAILED:
            self._join(30)
            raise _error(message[1], message[2])
        self.vocab_size: int = message[1]["vocab_size"]

    # ------------------------------------------------------------------ the loop's interface

    def submit(self, request: Request) -> Future:
        """Queue a request; the future resolves once it is admitted (or holds its error)."""
        done: Future = Future()
        if self.error is not None:
            done.set_exception(EngineError(self.error))
            return done
        self._requests[request.request_id] = request
        self._open[request.request_id] = set(range(request.gen_config.n))
        self._admissions[request.request_id] = done
        config = dataclasses.asdict(request.gen_config)
        self._send(ADD, request.request_id, request.prompt_ids, config, request.adapter,
                   request.allow_prefix_match)
        return done

    def abort(self, request_id: int) -> None:
        if self.error is None:
            self._send(ABORT, request_id)

    def score(self, token_ids: list[int]) -> Future:
        return self._call(SCORE, list(token_ids))

    def stats(self) -> dict[str, Any]:
        """The engine's statistics as of its last step."""
        return dict(self._stats)

    def reset_counters(self) -> Future:
        """Zero the engine's request and token counters (after the server's warm-up)."""

        def keep(done: Future) -> None:
            # On the reader thread, before any later message: no older figures follow.
            if done.exception() is None:
                self._stats = done.result()

        done: Future = Future()
        done.add_done_callback(keep)
        return self._call(RESET, done=done)

    def _call(self, kind: str, *args: Any, done: Future | None = None) -> Future:
        """Send a command the engine answers with a result; the future holds it."""
        done = done or Future()
        call_id = next(self._call_ids)
        self._calls[call_id] = done
        self._send(kind, call_id, *args)
        return done

    def close(self) -> None:
        """Ask the engine process to finish, and make sure it has: it is terminated, then
        killed, if it does not exit in time."""
        self._closing = True
        if self.process.is_alive():
            try:
                self._send(CLOSE)
            except (OSError, EngineError):
                pass
            self._join(60)
        if self.process.is_alive():
            self.process.terminate()
            self._join(10)
        if self.process.is_alive():
            self.process.kill()
            self._join(None)
        self._commands.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(10)  # it ends at the pipe's end, after the last outputs

    def _join(self, timeout: float | None) -> None:
        with self._join_lock:
            self.process.join(timeout)

    def _send(self, *message: Any) -> None:
        data = _pack(*message)
        with self._send_lock:
            try:
                self._commands.send_bytes(data)
            except (OSError, BrokenPipeError) as exc:
                raise EngineError(self.error or f"The engine process is gone ({exc}).") from None

    # ------------------------------------------------------------------ engine messages

    def _read(self) -> None:
        try:
            while True:
                message = _unpack(self._outputs.recv_bytes())
                kind = message[0]
                if kind == OUTPUTS:
                    # Statistics first: whoever gets the last outputs reads them as of that step.
                    self._stats = message[2]
                    self._deliver(message[1])
                elif kind == ADMITTED:
                    _, request_id, error_class, text = message
                    done = self._admissions.pop(request_id, None)
                    if error_class is None:
                        if done is not None:
                            done.set_result(request_id)
                    else:
                        self._requests.pop(request_id, None)
                        self._open.pop(request_id, None)
                        if done is not None:
                            done.set_exception(_error(error_class, text))
                elif kind == RESULT:
                    _, call_id, value, error_class, text = message
                    done = self._calls.pop(call_id)
                    if error_class is None:
                        done.set_result(value)
                    else:
                        done.set_exception(_error(error_class, text))
        except (EOFError, OSError):
            self._engine_stopped()

    def _deliver(self, outputs: list) -> None:
        for request_id, fields in outputs:
            request = self._requests.get(request_id)
            if request is None:
                continue
            out = _gen_out(fields)
            if out.finish_reason is not None:
                open_choices = self._open[request_id]
                open_choices.discard(out.index)
                if not open_choices:
                    self._requests.pop(request_id, None)
                    self._open.pop(request_id, None)
            try:
                request.sink(out)
            except Exception:  # one consumer's failure must not stop everyone's outputs
                logger.exception("delivering an output of request %d failed", request_id)

    def _engine_stopped(self) -> None:
        if self._closing:
            self.error = "The engine was closed."
        else:
            self._join(5)
            code = self.process.exitcode
            self.error = ("The engine process stopped" if code == 0 else
                          f"The engine process exited unexpectedly (exit code {code})") + (
                              "; restart the server.")
            logger.error("%s", self.error)
        for done in [*self._admissions.values(), *self._calls.values()]:
            if not done.done():
                done.set_exception(EngineError(self.error))
        self._admissions.clear()
        self._calls.clear()
        for request_id, request in list(self._requests.items()):
            for index in sorted(self._open.get(request_id, ())):
                request.sink(GenOut("", [], len(request.prompt_ids), 0, "error", index,
                                    error=self.error))
        self._requests.clear()
        self._open.clear()
