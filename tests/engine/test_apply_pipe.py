"""The pipe between `pamgate serve` and its apply process (engine/apply_process.py): the records are
pickle.dumps's bytes, and the messages of one reactor turn leave in one write at its end, a real child
answering them (a SQLite file)."""
from __future__ import annotations

import pickle

import pytest_twisted
from twisted.internet import reactor, task

from consent_store.store import Store
from engine import config
from engine.apply_process import _LENGTH, ApplyProcess, _carried, _record, _records
from engine.assembly import build_pipeline
from engine.pipeline import now_utc
from tests.builders import adt


def test_a_record_is_the_length_then_what_pickle_dumps_makes():
    pipeline = build_pipeline(config.Config())
    texts = [adt("A01", ipp=f"71000{i}", zfa="ACTIF|20250106090000|||||||NA||IC|20250106090000")
             for i in range(3)]
    values = [(i, *_carried(pipeline.prepare(t, t.encode(), now_utc()))) for i, t in enumerate(texts)]
    stream = bytearray()
    for value in values:
        body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        assert _record(value) == _LENGTH.pack(len(body)) + body      # the child reads what it always read
        stream += _record(value)
    stream += _record(("ready",))[:5]                                  # a partial record stays
    assert _records(stream) == values
    assert len(stream) == 5


async def _ready(tmp_path) -> tuple[ApplyProcess, object]:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    Store(url).upgrade()
    path = tmp_path / "config.yaml"
    path.write_text(f'store: {{url: "{url}"}}\n')
    applier = ApplyProcess(reactor, str(path))
    applier.start()
    for _ in range(600):
        if applier.ready:
            break
        await task.deferLater(reactor, 0.05, lambda: None)
    assert applier.ready
    return applier, build_pipeline(config.load(str(path)))


@pytest_twisted.ensureDeferred
async def test_the_messages_of_one_reactor_turn_reach_the_child_in_one_write(tmp_path):
    applier, pipeline = await _ready(tmp_path)
    try:
        texts = [adt("A28", ipp=f"72000{i}") for i in range(3)]
        answers = [applier.submit(pipeline.prepare(t, t.encode(), now_utc())) for t in texts]
        assert len(applier._outgoing) == 3          # nothing written yet: the turn is not over
        stdin = applier._child.transport.pipes[0]
        await task.deferLater(reactor, 0, lambda: None)
        assert applier._outgoing == []
        assert stdin not in reactor.getWriters()    # written at once, not left to the reactor
        answered = [await d for d in answers]
        assert [a.code for a in answered] == ["AA"] * 3
        assert [a.control_id for a in answered] == [t.split("|")[9] for t in texts]
    finally:
        await applier.stop()


@pytest_twisted.ensureDeferred
async def test_a_message_submitted_in_the_turn_that_stops_is_still_applied(tmp_path):
    applier, pipeline = await _ready(tmp_path)
    text = adt("A28", ipp="730001")
    answer = applier.submit(pipeline.prepare(text, text.encode(), now_utc()))
    stopped = applier.stop()        # the same turn: its record is written before the child's stdin closes
    assert (await answer).code == "AA"
    await stopped
