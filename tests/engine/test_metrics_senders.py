"""`metrics.on_message` keeps each sender's label and gauge child (the regex and labels() are not paid on every
message), bounded whatever a feed writes in MSH-3/4."""
from __future__ import annotations

import pytest

from engine import metrics


@pytest.fixture
def fresh_senders():
    """The module's sender state as if the process had just started; put back after the test."""
    saved = set(metrics._senders), dict(metrics._sender_gauges), dict(metrics.last_seen)
    metrics._senders.clear()
    metrics._sender_gauges.clear()
    metrics.last_seen.clear()
    yield
    for label in set(metrics.last_seen) - set(saved[2]):
        metrics.last_message.remove(label)
    metrics._senders.clear(), metrics._senders.update(saved[0])
    metrics._sender_gauges.clear(), metrics._sender_gauges.update(saved[1])
    metrics.last_seen.clear(), metrics.last_seen.update(saved[2])


def _gauge(label: str) -> float | None:
    return metrics.registry.get_sample_value("pamgate_last_message_timestamp_seconds", {"sender": label})


def test_a_sender_is_labelled_once_and_its_time_set_on_each_message(fresh_senders):
    metrics.on_message("GAM\x1b|CHU", at=10.0)
    child = metrics._sender_gauges["GAM\x1b|CHU"]
    metrics.on_message("GAM\x1b|CHU", at=12.5)
    assert metrics._sender_gauges["GAM\x1b|CHU"] is child
    assert child == ("GAM_|CHU", metrics.last_message.labels("GAM_|CHU"))
    assert _gauge("GAM_|CHU") == 12.5 and metrics.last_seen == {"GAM_|CHU": 12.5}


def test_past_max_senders_the_rest_count_as_other_and_the_kept_senders_are_bounded(fresh_senders):
    for i in range(5 * metrics.MAX_SENDERS):
        metrics.on_message(f"APP{i}|FAC", at=float(i))
    assert len(metrics._sender_gauges) == 4 * metrics.MAX_SENDERS
    assert len(metrics.last_seen) == metrics.MAX_SENDERS + 1
    assert metrics.last_seen["(other)"] == 5 * metrics.MAX_SENDERS - 1
    # one kept as "(other)" stays so; one not kept is labelled again, the same way
    metrics.on_message(f"APP{metrics.MAX_SENDERS}|FAC", at=1e6)
    metrics.on_message(f"APP{5 * metrics.MAX_SENDERS - 1}|FAC", at=2e6)
    assert _gauge("(other)") == 2e6 and _gauge(f"APP{metrics.MAX_SENDERS}|FAC") is None
    metrics.on_message("APP0|FAC", at=3e6)
    assert _gauge("APP0|FAC") == 3e6
