"""`pamgate status --url` that is not an HTTP URL is one line on stderr and exit 2, never a traceback."""
from __future__ import annotations

import pytest

from tests.cli.run import one_line, pamgate


@pytest.mark.parametrize("url", ["notaurl", "http://", "ftp://127.0.0.1:8080", "http://127.0.0.1:abc",
                                 "http://127.0.0.1:99999", "http://[::1"])
def test_a_bad_url_is_one_line(tmp_path, url):
    line = one_line(pamgate(tmp_path, "status", "--url", url))
    assert line.startswith("pamgate: --url ") and "expected http://HOST:PORT" in line, line


def test_nobody_listening_is_one_line(tmp_path):
    line = one_line(pamgate(tmp_path, "status", "--url", "http://127.0.0.1:1"))
    assert "cannot reach pamgate at http://127.0.0.1:1" in line, line
