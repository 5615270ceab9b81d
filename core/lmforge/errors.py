"""Errors a user can meet. Their message is one sentence that says what to do; the CLI and the
server print it as it is, without a traceback."""


class LmforgeError(Exception):
    """Base class of every error that carries a user-facing message."""


class ConfigError(LmforgeError, ValueError):
    """A configuration value is invalid; the message names the field."""


class ModelLoadError(LmforgeError):
    """A model cannot be found, read or mapped onto a supported architecture."""


class PluginError(LmforgeError):
    """A plugin, engine, template or quantizer that was asked for is not available."""


class PromptTooLongError(ConfigError):
    """A prompt does not fit the session length."""


class EngineError(LmforgeError):
    """The engine failed while running a request (the message carries the cause)."""


class EngineDeadError(EngineError):
    """The engine cannot run another step (a tensor-parallel rank died): requests fail with
    this message until the engine is restarted."""
