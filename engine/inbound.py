"""From an inbound frame to its ACK: the handler the MLLP listener is given.

The message is prepared where the frame arrived (parse, mapping, facts), applied by whoever `submit`s it
(the apply process for `pamgate serve`, an inline commit for the replay), and answered only once the commit
that holds it is done. The ACK policy is here: the pipeline's answer becomes AA/AE/AR with its ERR
segments; a store that cannot commit is left to the listener ("store unavailable", AE 207); any other
failure is answered AE 206, nothing applied. A frame the listener refuses by itself is journaled.
"""
from __future__ import annotations

import time

import structlog

from engine import logs, metrics
from engine.commit import StoreUnavailable
from engine.pipeline import INTERNAL_ERROR, INTERNAL_TEXT, ack_errors, now_utc
from mllp.ack import AckError, build_ack

log = structlog.get_logger("pamgate.serve")


def prepared(pipeline, submit):
    """apply(frame, received_at) -> Deferred[Answered]: prepare the message here (parse, mapping, facts),
    then `submit(work)` applies it and fires once the commit that holds it is done."""
    def apply(frame, received_at):
        return submit(pipeline.prepare(frame.text, frame.raw, received_at))
    return apply


def in_process(committer):
    """submit(work) through a GroupCommit (or the replay's inline one) of this process."""
    def submit(work):
        return committer.submit(work.run, work.keys(), work.refused).addCallback(work.answered)
    return submit


def message_handler(apply, on_events=None):
    """The MLLP listener's handler: `apply` the frame (ACK after the commit that holds it), then the ACK.
    `on_events()`: called when the message put events in the outbox (the dispatcher's wake-up)."""

    def handle(frame):
        started = time.perf_counter()

        def ack(answered):
            if answered.events and on_events is not None:
                on_events()
            metrics.ack_latency.observe(time.perf_counter() - started)
            metrics.on_message(answered.sender)
            if answered.conflicting:
                metrics.duplicates_conflicting.inc()
                # what the sender wrote is escaped by the log configuration (logs.neutralise_input on main)
                log.warning("message.duplicate_conflicting", sender=answered.sender, control_id=answered.control_id,
                            hl7_event=answered.event,
                            detail="this MSH-3/4/10 was already applied to a message with other content: "
                                   "answered AA, journaled, not applied")
            # one line per message at info, without identity: who sent it, its MSH-10 (a control id, no
            # identity), its event, the ACK code and how long it took; for a refusal, where and which code only
            # (an error's text may quote a field's value)
            if logs.enabled("info"):
                fields = dict(sender=answered.sender, msh10=answered.control_id, hl7_event=answered.event,
                              ack=answered.code, duration_ms=round((time.perf_counter() - started) * 1000, 1))
                if answered.code != "AA":
                    fields["errors"] = [f"{e.segment}{f'-{e.field}' if e.field else ''}:{e.code}"
                                        for e in answered.errors]
                if answered.duplicate:
                    fields["duplicate"] = True
                log.info("message.answered", **fields)
            if logs.enabled("debug"):
                log.debug("message.patient", msh10=answered.control_id, patient=answered.patient,
                          errors=[e.text for e in answered.errors])
            if answered.ack:
                return answered.ack   # built and journaled in the transaction: the journal shows what is sent
            return build_ack(frame.text, answered.code, ack_errors(answered.errors),
                             expected_sequence=answered.expected_sequence)

        def internal(failure):
            # a store that cannot commit is the listener's "store unavailable" (207, retry later); anything
            # else is an error of ours, answered once and for all (206): resending would fail the same way
            if failure.check(StoreUnavailable):
                return failure
            log.error("message.internal_error", error=failure.type.__name__)
            err = AckError(segment="", sequence=1, field=0, component=None, code=INTERNAL_ERROR, severity="E",
                           text=INTERNAL_TEXT)
            return build_ack(frame.text, "AE", [err])
        return apply(frame, now_utc()).addCallbacks(ack, internal)
    return handle


def rejections_journaled(pipeline, submit):
    """The listener's `on_rejected(raw, error, ack)`: a frame it answered AR by itself (no MSH, undecodable, too
    large) goes into the journal too, with the ACK it was sent, through `submit` like any message."""
    def journal_rejected(raw, error, ack):
        work = pipeline.rejected(raw, "", now_utc(), "AR", error, ack)
        submit(work).addErrback(lambda f: log.warning("journal.rejected_frame_failed", error=f.type.__name__))
    return journal_rejected
