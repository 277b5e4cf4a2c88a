"""What every channel shares: its one failure, DeliveryFailed (one line), and the envelope it sends.

A channel is a class built with (destination, reactor) whose `deliver(envelope)` returns a Deferred that
fires on success and fails with DeliveryFailed, and whose `close()` returns a Deferred.
"""
from __future__ import annotations

from twisted.internet.defer import CancelledError, TimeoutError
from twisted.internet.error import ConnectError, ConnectionRefusedError


class DeliveryFailed(Exception):
    """One line: why this attempt did not deliver. `summary` is what the log may say: a receiver's own
    words (an HTTP body, an ERR text) may quote a patient, so they go only to the delivery row."""

    def __init__(self, message: str, summary: str | None = None):
        super().__init__(message)
        self.summary = summary or message


def public_envelope(envelope: dict) -> dict:
    """The envelope as receivers get it: the internal ordering key (`patient_key`) stays home."""
    return {k: v for k, v in envelope.items() if k != "patient_key"}


def failure_line(failure, timeout):
    """Any failure of one attempt, as one line without a traceback."""
    if failure.check(DeliveryFailed):
        return failure
    if failure.check(CancelledError, TimeoutError):
        raise DeliveryFailed(f"no answer within {timeout:g} s")
    if failure.check(ConnectionRefusedError):
        raise DeliveryFailed("connection refused")
    if failure.check(ConnectError):
        raise DeliveryFailed(f"cannot connect: {failure.getErrorMessage()}")
    raise DeliveryFailed(f"{failure.type.__name__}: {failure.getErrorMessage()}"[:300], failure.type.__name__)
