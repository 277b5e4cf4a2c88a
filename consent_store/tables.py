"""The store's tables (SQLAlchemy Core). Plain columns. A patient's history is rows (consent_fact, episode,
movement, dmp_result, break_glass_request), appended or updated by key and read by indexed queries; the
patient row keeps only what stays small (identifiers held, counters). The rest is the journal, the audit
chain and the outbox."""
from sqlalchemy import (BigInteger, Boolean, Column, DateTime, ForeignKey, Index, Integer, LargeBinary,
                        MetaData, String, Table, Text, UniqueConstraint)

metadata = MetaData()
ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements only INTEGER PRIMARY KEY

# Every message received, with its raw bytes and the ACK it got (Mirth's message journal).
journal = Table(
    "journal", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("sender_application", String(200)),
    Column("sender_facility", String(200)),
    Column("control_id", String(200)),
    Column("event", String(20)),
    Column("ack_code", String(2), nullable=False),
    Column("error", Text),
    Column("patient_id", ID),
    Column("raw", LargeBinary, nullable=False),
    Column("ack", Text),                 # the ACK as sent (NULL: a frame the listener answered by itself)
    Column("patient_ipp", String(200)),  # the IPP the mapping read, and the visit: journal list --ipp/--visit
    Column("visit", String(200)),
)
Index("ix_journal_received_at", journal.c.received_at)
# the console's searches (migration 0007_console): by MSH-10, by patient, by sender, by ACK code
Index("ix_journal_control_id", journal.c.control_id)
Index("ix_journal_patient_time", journal.c.patient_id, journal.c.received_at)
Index("ix_journal_sender_time", journal.c.sender_application, journal.c.sender_facility, journal.c.received_at)
Index("ix_journal_ack_time", journal.c.ack_code, journal.c.received_at)
# pamgate journal (migration 0008)
Index("ix_journal_patient_ipp", journal.c.patient_ipp)
Index("ix_journal_visit", journal.c.visit)

# Messages applied, for duplicate detection on MSH-3, MSH-4, MSH-10.
applied = Table(
    "applied_message", metadata,
    Column("sender_application", String(200), primary_key=True),
    Column("sender_facility", String(200), primary_key=True),
    Column("control_id", String(200), primary_key=True),
    Column("journal_id", ID, nullable=False),
    # SHA-256 of the message's text: a resend with other content is told from a true duplicate (NULL: unknown)
    Column("content_hash", String(64)),
)

# The HL7 sequence number protocol (MSH-13), per sender that uses it: the number of the last message accepted,
# written in the transaction that applied it. NULL: the next number accepted sets it (first start, or -1).
sender_sequence = Table(
    "sender_sequence", metadata,
    Column("sender_application", String(200), primary_key=True),
    Column("sender_facility", String(200), primary_key=True),
    Column("last_accepted", BigInteger),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

patients = Table(
    "patient", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    # JSON, bounded: the identifiers the patient holds, the next fact's seq, whether it has any history
    Column("state", Text, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("merged_into", ID, ForeignKey("patient.id")),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # seconds, rounded up: at least the longest any visit of the patient has lasted from start to discharge,
    # ever (it only grows); how far back a visit discharged after an instant can have begun (Q_VISITS_AT).
    # NULL: no visit was ever discharged. Migration 0011_visits_at.
    Column("longest_visit", Integer),
)

# Identities that lead to a patient: IPP (PI, by assigning authority) and INS (by OID).
identifiers = Table(
    "identifier", metadata,
    Column("kind", String(10), primary_key=True),
    Column("authority", String(200), primary_key=True),
    Column("value", String(200), primary_key=True),
    Column("patient_id", ID, ForeignKey("patient.id"), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
)
Index("ix_identifier_patient", identifiers.c.patient_id)

# The audit trail: every change and every decision, each entry chained to the previous one's hash.
audit = Table(
    "audit", metadata,
    Column("seq", ID, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("patient_id", ID),
    Column("kind", String(50), nullable=False),
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
    # the professional the entry is about (a decision's user, a consent's collector, a DMP result's user),
    # copied from the payload for the auditors' search; outside the hash, which covers the payload
    Column("user_id", String(200)),
)
Index("ix_audit_patient", audit.c.patient_id)
Index("ix_audit_user", audit.c.user_id, audit.c.seq)
Index("ix_audit_at", audit.c.at)
# the latest entry of a kind (the audit chain's last verification, the console's last actions): migration 0010
Index("ix_audit_kind", audit.c.kind, audit.c.seq)

# One row holding the chain's head, locked by each writer so the chain stays linear across instances.
audit_head = Table(
    "audit_head", metadata,
    Column("id", Integer, primary_key=True),
    Column("hash", String(64), nullable=False),
)

# Events written in the same transaction as the change that caused them.
outbox = Table(
    "outbox", metadata,
    Column("seq", ID, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("type", String(50), nullable=False),
    Column("patient_key", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("envelope", Text, nullable=False),
)

# One row per event and destination: the per-destination queue, its retries and dead letters.
delivery = Table(
    "delivery", metadata,
    Column("event_seq", ID, ForeignKey("outbox.seq"), primary_key=True),
    Column("destination", String(100), primary_key=True),
    Column("patient_key", String(200)),
    Column("status", String(10), nullable=False),   # pending, done, dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text),
    Column("delivered_at", DateTime(timezone=True)),
    Column("last_attempt_at", DateTime(timezone=True)),
    # a dispatcher's lease on a row it is delivering; past claimed_until, another may take it over
    Column("claimed_by", String(64)),
    Column("claimed_until", DateTime(timezone=True)),
)
Index("ix_delivery_pending", delivery.c.destination, delivery.c.status, delivery.c.next_attempt_at)
# the heads of a destination's queue: each patient's first pending delivery, read from the index alone
Index("ix_delivery_patient_order", delivery.c.destination, delivery.c.status, delivery.c.patient_key,
      delivery.c.event_seq)

# A patient's history, the one source of truth: each message writes the rows it changes, and reads, through
# the indexes below, only the rows its answer depends on (engine/patient_view.py). A patient merged into
# another has none: its survivor's rows carry what it brought.
episode = Table(
    "episode", metadata,
    Column("patient_id", ID, ForeignKey("patient.id"), primary_key=True),
    Column("visit", String(200), primary_key=True),          # PV1-19
    Column("nda", String(200)),                              # PID-18
    Column("patient_class", String(50)),                     # PV1-2
    Column("uf", String(200)),                               # medical responsibility UF (ZBE-7)
    Column("admitted_at", DateTime(timezone=True)),
    Column("discharged_at", DateTime(timezone=True)),
    Column("cancelled", Boolean, nullable=False),
    Column("started_at", DateTime(timezone=True)),           # admission, else first movement
)
# the visits an instant can fall in: the latest begun by then, still open (no discharge, or a later one)
Index("ix_episode_open", episode.c.patient_id, episode.c.cancelled, episode.c.discharged_at, episode.c.started_at)
Index("ix_episode_started", episode.c.patient_id, episode.c.cancelled, episode.c.started_at)

movement = Table(
    "movement", metadata,
    Column("patient_id", ID, ForeignKey("patient.id"), primary_key=True),
    Column("visit", String(200), primary_key=True),
    Column("ordinal", Integer, primary_key=True),            # its place in the visit, as received
    Column("movement_id", String(200)),                      # ZBE-1
    Column("event", String(20)),                             # the trigger (A01, A02, ...)
    Column("action", String(20)),                            # INSERT / UPDATE / CANCEL
    Column("start", DateTime(timezone=True)),                # ZBE-2
    Column("historic", Boolean, nullable=False),
    Column("nature", String(50)),
    Column("uf_medical", String(200)),
    Column("uf_care", String(200)),
    Column("cancelled", Boolean, nullable=False),
)

# Every value ever collected (consent, feed opposition, DMP status, blocks), with its provenance.
consent_fact = Table(
    "consent_fact", metadata,
    Column("patient_id", ID, ForeignKey("patient.id"), primary_key=True),
    Column("seq", Integer, primary_key=True),                # arrival order within the patient
    Column("item", String(50), primary_key=True),            # consult, feed, dmp_status, block.*
    Column("value", String(200), nullable=False),
    Column("code", String(200)),                             # the raw code as sent (IC, INO, ...)
    Column("visit", String(200)),
    Column("collected_at", DateTime(timezone=True), nullable=False),
    Column("cancelled", Boolean, nullable=False),
    Column("source_msh10", String(200)),                     # the message that carried it, with its sender
    Column("source_sender", String(401)),
    Column("source_mapping", String(200)),
    Column("collected_by", Text),                            # JSON: who recorded it through the API
)
# (every read names the patient: no index leads with the item, migration 0012_fewer_pages)
# the latest value of an item by an instant, over the patient's visits or one of them (or none)
Index("ix_consent_fact_latest", consent_fact.c.patient_id, consent_fact.c.item, consent_fact.c.cancelled,
      consent_fact.c.collected_at, consent_fact.c.seq)
Index("ix_consent_fact_visit", consent_fact.c.patient_id, consent_fact.c.item, consent_fact.c.cancelled,
      consent_fact.c.visit, consent_fact.c.collected_at, consent_fact.c.seq)

# What the DMP answered a user about this patient (TD0.2, TD0.3), appended.
dmp_result = Table(
    "dmp_result", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("patient_id", ID, ForeignKey("patient.id"), nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("transaction", String(20), nullable=False),
    Column("result", String(50), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)
Index("ix_dmp_result_last", dmp_result.c.patient_id, dmp_result.c.user_id, dmp_result.c.transaction,
      dmp_result.c.at)

# Who asked for break-glass, when and why (the third item recorded per episode), appended.
break_glass_request = Table(
    "break_glass_request", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("patient_id", ID, ForeignKey("patient.id"), nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("visit", String(200)),
)
Index("ix_break_glass_request_patient", break_glass_request.c.patient_id, break_glass_request.c.at)

# Professionals, for the traceability reminder (every 6 months by default).
users = Table(
    "professional", metadata,
    Column("id", String(200), primary_key=True),
    Column("last_reminded_at", DateTime(timezone=True)),
)


def max_chars(column: Column) -> int | None:
    """The most characters `column` keeps (its String length), or None when unbounded. The one source of the
    limits that input is checked against where it comes in: a longer value is refused, never cut."""
    return getattr(column.type, "length", None)


# --- what a column can hold: derived from the tables above, the one place that says it ---------------------
# "table.column" -> its length in characters, for every column of limited length
LIMITS = {f"{t.name}.{c.name}": max_chars(c) for t in metadata.sorted_tables for c in t.columns if max_chars(c)}


def too_long(column_key: str, value) -> int | None:
    """The limit of the column "table.column" when the text `value` is longer than it (None: it fits, or the
    column has no limit). Values are refused, never cut: a cut one could stand for another."""
    limit = LIMITS.get(column_key)
    return limit if limit is not None and isinstance(value, str) and len(value) > limit else None


def unstorable(column_key: str, value) -> str | None:
    """Why the text `value` cannot be stored as received in the column "table.column", or None when it can:
    longer than the column, or holding a NUL byte (PostgreSQL's text cannot; SQLite is held to the same)."""
    if not isinstance(value, str):
        return None
    limit = too_long(column_key, value)
    if limit is not None:
        return f"{len(value)} characters long; at most {limit} can be stored"
    if "\x00" in value:
        return "it holds a NUL byte, which cannot be stored"
    return None


class NotStorable(ValueError):
    """A value that cannot be stored as received (`unstorable`); the operation that wrote it fails alone."""

    def __init__(self, column: str, value: str, why: str):
        super().__init__(f"{column}: {why}")
        self.column, self.value, self.why = column, value, why


def storable(column_key: str, value):
    """`value`, or NotStorable when it cannot be stored as received in the column "table.column"."""
    why = unstorable(column_key, value)
    if why is not None:
        raise NotStorable(column_key, value, why)
    return value


__all__ = ["max_chars", "LIMITS", "too_long", "unstorable", "storable", "NotStorable", "metadata", "journal",
           "applied", "sender_sequence", "patients", "identifiers", "audit", "audit_head", "outbox", "delivery",
           "users", "episode", "movement", "consent_fact", "dmp_result", "break_glass_request", "UniqueConstraint"]
