"""Prometheus metrics served on /metrics: counters and histograms kept as things happen, and the store's
gauges (dead letters, the oldest pending delivery, the journal's rows) read at scrape time (`from_store`)
with indexed queries only."""
import re
import threading
import time
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mllp.ack import ack_summary, read_ack

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
    if code == "AE" and any(e.code == "207" for e in read_ack(ack_text).errors):
        store_unavailable_acks.inc()
    # the label is what the sender wrote: only the shape of an HL7 event, so it cannot grow without bound
    labels = (event if _EVENT.fullmatch(event) else "?", code or "?")
    counter = _counters.get(labels)
    if counter is None:
        counter = _counters[labels] = messages.labels(*labels)
    counter.inc()


_EVENT = re.compile(r"[A-Z][0-9A-Z]{2}")
_counters: dict = {}   # (event, code) -> its child of `messages`: labels() costs more than inc()


def on_commit(size: int, seconds: float) -> None:
    commit_batch.observe(size)
    commit_seconds.observe(seconds)


# --- what an alert is written on (docs/alerts.yaml) ---

MAX_SENDERS = 200            # senders tracked by name; past that, their messages count under "(other)"
build_info = Gauge("pamgate_build_info", "Always 1; the running version in its label", ["version"],
                   registry=registry)
last_message = Gauge("pamgate_last_message_timestamp_seconds",
                     "When the last message of each sender (MSH-3|MSH-4) was answered, unix seconds",
                     ["sender"], registry=registry)
mllp_connections = Gauge("pamgate_mllp_connections", "Open MLLP connections, by listener", ["listener"],
                         registry=registry)
decision_latency = Histogram("pamgate_decision_latency_seconds",
                             "From a decision request read to its answer committed",
                             buckets=(.002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5), registry=registry)
dead_letters = Gauge("pamgate_dead_letters", "Deliveries given up (dead letters), by destination",
                     ["destination"], registry=registry)
pending_deliveries = Gauge("pamgate_pending_deliveries", "Deliveries waiting, by destination",
                           ["destination"], registry=registry)
oldest_pending = Gauge("pamgate_oldest_pending_delivery_age_seconds",
                       "Age of the oldest delivery still waiting, by destination (0: none waits)",
                       ["destination"], registry=registry)
store_unavailable_acks = Counter("pamgate_store_unavailable_acks_total",
                                 "Messages answered AE 207: the store could not commit (the sender retries)",
                                 registry=registry)
store_up = Gauge("pamgate_store_up", "1 when the store answered the last scrape's reads, else 0", registry=registry)
journal_rows = Gauge("pamgate_journal_rows",
                     "Rows in the message journal (from its first and last ids: a gap left by a rollback counts)",
                     registry=registry)

_senders_lock = threading.Lock()
_senders: set[str] = set()
last_seen: dict[str, float] = {}     # sender label -> unix seconds, as the gauge has it (`pamgate status`)
_SENDER_TEXT = re.compile(r"[^\w.|@:/ -]")


def version() -> str:
    try:
        return metadata.version("pamgate")
    except metadata.PackageNotFoundError:
        return "unknown"


build_info.labels(version()).set(1)


def sender_label(sender: str) -> str:
    """MSH-3|MSH-4 as a label: what the sender wrote, characters outside a plain name replaced, at most 64,
    and "(other)" past MAX_SENDERS names, so a hostile feed cannot grow the metrics without bound."""
    label = _SENDER_TEXT.sub("_", sender)[:64] or "|"
    with _senders_lock:
        if label not in _senders:
            if len(_senders) >= MAX_SENDERS:
                return "(other)"
            _senders.add(label)
    return label


def on_message(sender: str, at: float | None = None) -> None:
    """A message answered (any ACK): its sender's last-message time."""
    at = time.time() if at is None else at
    known = _sender_gauges.get(sender)
    if known is None:
        label = sender_label(sender)
        known = label, last_message.labels(label)
        if len(_sender_gauges) < 4 * MAX_SENDERS:
            _sender_gauges[sender] = known
    label, gauge = known
    gauge.set(at)
    last_seen[label] = at


# sender as written -> (its label, its child of `last_message`): the label's regex and labels() cost more than
# set(), on every message. A label, once given, stays (`_senders` only grows), so this never goes stale;
# bounded, as what a hostile feed writes in MSH-3/4 is
_sender_gauges: dict[str, tuple] = {}


def from_store(uow, destinations, now: float | None = None) -> dict:
    """The store's gauges, read in one transaction (run at scrape time): per configured destination, the
    pending and dead deliveries and the age of the oldest pending one; the journal's rows. Returns what it
    read (`pamgate status` shows the same)."""
    now = time.time() if now is None else now
    summary = uow.outbox_summary()
    for name in destinations:
        row = summary.get(name, {})
        pending_deliveries.labels(name).set(row.get("pending", 0))
        dead_letters.labels(name).set(row.get("dead", 0))
        oldest = row.get("oldest_pending_at")
        oldest_pending.labels(name).set(max(0.0, now - oldest.timestamp()) if oldest else 0)
    rows = uow.journal_rows()
    journal_rows.set(rows)
    return {"destinations": summary, "journal_rows": rows}
