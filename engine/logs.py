"""structlog set-up: JSON in production, readable on a terminal, no patient identity above DEBUG."""
import logging
import sys

import structlog

# Keys that may carry a patient's identity; their values only reach DEBUG logs.
IDENTITY_KEYS = frozenset({"patient", "ipp", "ins", "nda", "name", "birth_date", "visit", "patient_id",
                           "identities", "message", "raw", "text", "pid"})
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def redact_identity(_, method_name, event_dict):
    if method_name != "debug":
        for k in IDENTITY_KEYS & event_dict.keys():
            event_dict[k] = "[redacted]"
    return event_dict


#: Above DEBUG, a string value is cut to this many characters: a sender's 64 KiB MSH-3 is not a log line.
MAX_VALUE_LENGTH = 200
# Keys whose values are ours and span lines (a traceback): their line breaks stay.
_MULTILINE_KEYS = frozenset({"exception", "failure"})


def _escape(text: str, keep_newlines: bool) -> str:
    return "".join(c if c.isprintable() or (keep_newlines and c == "\n") else repr(c)[1:-1]
                   for c in text)


def _neutralised(value, limit, keep_newlines=False):
    if isinstance(value, str):
        if not value.isprintable():
            value = _escape(value, keep_newlines)
        if limit and len(value) > limit:
            value = f"{value[:limit]}…(+{len(value) - limit} chars)"
        return value
    if isinstance(value, bytes):
        return _neutralised(value.decode("latin-1"), limit)
    if isinstance(value, (list, tuple)):
        return [_neutralised(v, limit) for v in value]
    if isinstance(value, dict):
        return {k: _neutralised(v, limit) for k, v in value.items()}
    return value


def neutralise_input(_, method_name, event_dict):
    """What a sender wrote (MSH-3/4, MSH-18, an error quoting a field) reaches no log line as written:
    control characters (0x1C, ESC sequences, NUL, line breaks) are escaped, and above DEBUG each value
    is cut to MAX_VALUE_LENGTH characters. One place for every log line, whoever logs it."""
    limit = None if method_name == "debug" else MAX_VALUE_LENGTH
    for key, value in event_dict.items():
        if key == "event":
            continue
        event_dict[key] = _neutralised(value, None if key in _MULTILINE_KEYS else limit,
                                       keep_newlines=key in _MULTILINE_KEYS)
    return event_dict


_level = logging.DEBUG    # the level `configure` set: structlog's default prints everything


def enabled(level: str) -> bool:
    """Whether a line at `level` would be written: a caller on the message path skips building one that
    would not (a filtered call through structlog's lazy logger still costs a bind, ~5 µs)."""
    return LEVELS[level] >= _level


def configure(level: str = "info", fmt: str = "console", stream=None) -> None:
    global _level
    _level = LEVELS[level]
    renderer = (structlog.processors.JSONRenderer() if fmt == "json"
                else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_identity,
            structlog.processors.format_exc_info,
            neutralise_input,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def announcer(fmt: str = "console", stream=None):
    """say(event, text, **fields): what `serve` tells its operator on stdout (the configuration loaded, each
    listener, the stop): `pamgate: text` on a console, one JSON object per line with `log.format: json`."""
    import json
    from datetime import datetime, timezone

    def say(event: str, text: str, **fields) -> None:
        out = stream or sys.stdout
        if fmt == "json":
            line = json.dumps({"timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
                               "level": "info", "event": event, "detail": text, **fields}, ensure_ascii=False)
        else:
            line = f"pamgate: {text}"
        print(line, file=out, flush=True)
    return say
