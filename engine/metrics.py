"""Prometheus metrics served on /metrics."""
import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mllp.ack import ack_summary

registry = CollectorRegistry()
messages = Counter("pamgate_messages_total", "Messages answered (ACK written), by event and ACK code",
                   ["event", "ack"], registry=registry)
acks_undelivered = Counter("pamgate_acks_undelivered_total",
                           "ACKs that could not be written: the sender had closed the connection", registry=registry)
ack_latency = Histogram("pamgate_ack_latency_seconds", "From frame received to ACK ready",
                        buckets=(.001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5), registry=registry)
commit_batch = Histogram("pamgate_commit_batch_size", "Operations per committed transaction",
                         buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=registry)
commit_seconds = Histogram("pamgate_commit_seconds", "Time to run and commit one batch", registry=registry)
decisions = Counter("pamgate_decisions_total", "Decisions given, by action and outcome",
                    ["action", "decision"], registry=registry)
outbox_depth = Gauge("pamgate_outbox_depth", "Deliveries waiting in the outbox", registry=registry)
deliveries = Counter("pamgate_deliveries_total", "Outbound deliveries, by destination and result",
                     ["destination", "result"], registry=registry)


duplicates_conflicting = Counter(
    "pamgate_duplicates_conflicting_total",
    "Messages under an MSH-3/4/10 already applied but with other content: answered AA, journaled, not applied",
    registry=registry)
apply_restarts = Counter("pamgate_apply_process_restarts_total",
                         "Times the apply process ended unasked (its messages were answered AE 207)", registry=registry)
apply_in_flight = Gauge("pamgate_apply_process_in_flight", "Messages handed to the apply process, not answered yet",
                        registry=registry)


def on_ack(ack_text: str, written: bool) -> None:
    """The MLLP listener's report of one ACK (see mllp.listener): count those written."""
    if not written:
        acks_undelivered.inc()
        return
    event, code = ack_summary(ack_text)
    # the label is what the sender wrote: only the shape of an HL7 event, so it cannot grow without bound
    messages.labels(event if re.fullmatch(r"[A-Z][0-9A-Z]{2}", event) else "?", code or "?").inc()


def on_commit(size: int, seconds: float) -> None:
    commit_batch.observe(size)
    commit_seconds.observe(seconds)
