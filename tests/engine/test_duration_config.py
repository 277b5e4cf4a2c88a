"""ISO 8601 durations in config.yaml: the calendar part and the exact part kept apart, the zone in the policy."""
from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

from engine import config as configuration
from engine.domain import Period


def load(tmp_path, data):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return configuration.load(str(path), environ={})


def test_calendar_and_exact_parts_are_kept_apart():
    assert configuration.period("P1Y2M3DT4H") == Period(months=14, days=3, delta=timedelta(hours=4))
    assert configuration.period("P2W") == Period(days=14)
    assert configuration.period("PT24H") == Period(delta=timedelta(hours=24))
    assert configuration.period("-P90D") == Period(days=-90)


def test_the_policy_carries_the_zone_and_every_duration(tmp_path):
    cfg = load(tmp_path, {"timezone": "America/Cayenne", "reminder_period": "P3M",
                          "dmp": {"verify_max_age": "P1D"}, "episode": {"validity_by_uf": {"URG": "PT12H"}}})
    policy = cfg.policy(None)
    assert policy.zone == "America/Cayenne"
    assert (policy.reminder_period, policy.verify_max_age) == (Period(months=3), Period(days=1))
    assert policy.episode.validity_by_uf == {"URG": Period(delta=timedelta(hours=12))}


@pytest.mark.parametrize("bad", ["P1.5M", "P1DT", "6M"])
def test_a_duration_that_cannot_be_counted_stops_the_start(tmp_path, bad):
    with pytest.raises(configuration.ConfigError, match=r"episode\.validity: not an ISO 8601 duration"):
        load(tmp_path, {"episode": {"validity": bad}})
