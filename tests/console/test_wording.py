"""The capture screen's result in plain French gives the validity end's date on the site's clock: a consent
valid until 23:30 UTC on 30 June is valid until 1 July in Paris."""
from zoneinfo import ZoneInfo

from console.wording import results_fr


def test_the_validity_end_is_dated_on_the_site_clock():
    view = {"gate": {"consult": "permit", "feed": "permit", "reasons": [],
                     "valid_until": "2025-06-30T23:30:00+00:00"}}
    assert results_fr(view, ZoneInfo("Europe/Paris"))[0] == "Consultation autorisée jusqu'au 01/07/2025"
    assert results_fr(view, ZoneInfo("UTC"))[0] == "Consultation autorisée jusqu'au 30/06/2025"
