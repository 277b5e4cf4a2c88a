"""The `pamgate` command of this venv, run as a user runs it: a subprocess, no PAMGATE_* from outside."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PAMGATE = str(Path(sys.executable).parent / "pamgate")


def pamgate(cwd, *args, env=None, timeout=60, input=None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PAMGATE_")}
    environ.update(env or {})
    return subprocess.run([PAMGATE, *map(str, args)], cwd=cwd, env=environ, capture_output=True, text=True,
                          timeout=timeout, input=input)


def one_line(p, code=2) -> str:
    """The one line on stderr of a refused command, exit `code`, no traceback."""
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]
