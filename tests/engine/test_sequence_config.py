"""`sequence_number_protocol.senders` in config.yaml: the senders that number their messages in MSH-13."""
from __future__ import annotations

import pytest
import yaml

from engine import config as configuration
from engine.assembly import build_pipeline


def load(tmp_path, data):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return configuration.load(str(path), environ={})


def test_senders_are_read_and_reach_the_pipeline(tmp_path):
    cfg = load(tmp_path, {"sequence_number_protocol": {"senders": [
        {"application": "GAM", "facility": "CHU-X"}, {"application": "LAB", "facility": ""}]}})
    assert cfg.sequence_number_protocol.keys() == {("GAM", "CHU-X"), ("LAB", "")}
    assert build_pipeline(cfg).sequenced == {("GAM", "CHU-X"), ("LAB", "")}
    assert build_pipeline(load(tmp_path, {})).sequenced == frozenset()


@pytest.mark.parametrize("section, problem", [
    ({"senders": [{"application": "GAM", "facility": "CHU-X", "window": 3}]},
     "sequence_number_protocol.senders.0.window: unknown key"),
    ({"senders": [{"application": "GAM"}]}, "sequence_number_protocol.senders.0.facility: Field required"),
    ({"senders": [{"application": "", "facility": "X"}]}, "sequence_number_protocol.senders.0.application"),
    ({"senders": [{"application": "GAM", "facility": "X"}, {"application": "GAM", "facility": "X"}]},
     "sequence_number_protocol.senders: sender GAM|X is listed twice"),
    ({"enabled": True}, "sequence_number_protocol.enabled: unknown key"),
])
def test_a_wrong_key_or_value_stops_the_start(tmp_path, section, problem):
    with pytest.raises(configuration.ConfigError) as e:
        load(tmp_path, {"sequence_number_protocol": section})
    assert problem in str(e.value)


def test_the_sender_rules_do_not_take_it(tmp_path):
    rule = {"application": "GAM", "facility": "CHU-X", "mapping": "pamfr-2.11", "sequence_number_protocol": True}
    with pytest.raises(configuration.ConfigError, match="mappings.senders.0.sequence_number_protocol: unknown key"):
        load(tmp_path, {"mappings": {"senders": [rule]}})
