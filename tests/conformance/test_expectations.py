"""The expectations file: validation with file:line:key, selectors, and instants."""
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from conformance import expectations as X
from conformance.messages import collect
from engine.errors import CommandError
from tests.conformance.test_messages import MSG, write


def load_text(tmp_path, text):
    p = tmp_path / "expect.yaml"
    p.write_text(text, encoding="utf-8")
    return X.load(str(p))


def error_of(tmp_path, text) -> str:
    with pytest.raises(CommandError) as e:
        load_text(tmp_path, text)
    return str(e.value)


def test_a_good_file_loads_with_its_defaults(tmp_path):
    exp, source = load_text(tmp_path, """
name: demo
steps:
  - message: a.hl7
    ack: AE
    err_contains: ZBE-4
    decisions:
      - {step: 1, action: consult, decision: deny, reasons: [consent.refused], at: "message + P7M"}
    events:
      - {type: consent.changed, data: {consult: deny}, count: 1}
""")
    assert source.endswith("expect.yaml") and exp.ack == "AA" and exp.at == "message"
    step = exp.steps[0]
    assert step.err_contains == ["ZBE-4"] and step.decisions[0].step == "1"
    assert step.decisions[0].reasons == ["consent.refused"] and step.events[0].count == 1


@pytest.mark.parametrize("text,expected", [
    ("steps:\n  - message: a.hl7\n    decisions:\n      - {action: consult, decison: deny}\n",
     ":4: steps[1].decisions[1].decison: unknown key"),
    ("steps:\n  - message: a.hl7\n    decisions:\n      - {action: read, decision: deny}\n",
     ":4: steps[1].decisions[1].action: Input should be 'consult' or 'feed'"),
    ("ack: OK\n", ":1: ack: Input should be 'AA', 'AE' or 'AR'"),
    ("steps:\n  - title: no selector\n", ":2: steps[1]: name the message with exactly one of message"),
    ("steps:\n  - {message: a.hl7, decisions: [{action: feed, decision: permit, at: yesterday}]}\n",
     "steps[1].decisions[1].at: expected message, now, message + P…, or an ISO 8601 date-time"),
    ("steps: [\n", "not valid YAML"),
    ("- just\n- a list\n", ":1: the expectations must be a mapping"),
])
def test_a_bad_file_is_one_line_naming_file_line_and_key(tmp_path, text, expected):
    message = error_of(tmp_path, text)
    assert "expect.yaml" in message and expected in message, message
    assert "\n" not in message


def test_a_missing_file_is_one_clear_line(tmp_path):
    with pytest.raises(CommandError, match=r"nowhere\.yaml: No such file"):
        X.load(str(tmp_path / "nowhere.yaml"))


def messages(tmp_path):
    write(tmp_path / "a.hl7", MSG.format(cid="A1", cs=""))
    write(tmp_path / "b.hl7", MSG.format(cid="B1", cs="") + "\r" + MSG.format(cid="B2", cs=""))
    return collect([tmp_path]).messages


def plan_of(tmp_path, steps):
    exp = X.Expectations.model_validate({"steps": steps})
    return X.plan(exp, messages(tmp_path), "expect.yaml")


def test_selectors_by_file_index_position_and_msh10(tmp_path):
    plan = plan_of(tmp_path, [{"message": "a.hl7", "ack": "AE"}, {"message": "b.hl7#2", "title": "two"},
                              {"message": 2, "title": "one"}, {"msh10": "B2", "title": "again"}])
    assert plan[1].ack == "AE" and plan[2].ack == "AA"
    assert [s.title for s in plan[2].steps] == ["one"]
    assert [s.title for s in plan[3].steps] == ["two", "again"]


@pytest.mark.parametrize("step,expected", [
    ({"message": "c.hl7"}, "steps[1].message: no file 'c.hl7' in this replay"),
    ({"message": "b.hl7"}, "b.hl7 holds 2 messages: say which, e.g. b.hl7#2"),
    ({"message": "b.hl7#3"}, "b.hl7 holds 2 message(s), not #3"),
    ({"message": 9}, "position 9 is outside 1..3"),
    ({"msh10": "Z9"}, "no message with MSH-10 'Z9'"),
])
def test_a_selector_that_names_no_message_is_an_error(tmp_path, step, expected):
    with pytest.raises(CommandError) as e:
        plan_of(tmp_path, [step])
    assert expected in str(e.value)


def test_two_ack_codes_for_one_message_is_an_error(tmp_path):
    with pytest.raises(CommandError, match="given two ACK codes: AA and AE"):
        plan_of(tmp_path, [{"message": "a.hl7", "ack": "AE"}, {"msh10": "A1", "ack": "AA"}])


def test_instants():
    tz = ZoneInfo("Europe/Paris")
    msg = datetime(2025, 1, 6, 8, 0, tzinfo=timezone.utc)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert X.resolve_moment(None, msg, now, tz) == msg
    assert X.resolve_moment("now", msg, now, tz) == now
    # months on the site's clock, as the rules count them: 09:00 in Paris in winter, 09:00 in Paris in summer
    assert X.resolve_moment("message + P7M", msg, now, tz) == datetime(2025, 8, 6, 7, 0, tzinfo=timezone.utc)
    assert X.resolve_moment("message - PT1H", msg, now, tz) == datetime(2025, 1, 6, 7, 0, tzinfo=timezone.utc)
    # a naive date-time is the site's local time
    assert X.resolve_moment("2025-01-06T10:00:00", msg, now, tz) == datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)
