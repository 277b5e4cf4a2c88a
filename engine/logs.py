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


def configure(level: str = "info", fmt: str = "console", stream=None) -> None:
    renderer = (structlog.processors.JSONRenderer() if fmt == "json"
                else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_identity,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
