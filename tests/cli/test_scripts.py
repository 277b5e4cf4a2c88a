"""scripts/test says why tests were skipped; PAMGATE_SHARED_SAMPLES points the tests at the shared samples
(issue 15)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_scripts_test_passes_rs():
    assert "pytest -rs" in (ROOT / "scripts" / "test").read_text()


def test_the_samples_folder_from_the_environment(tmp_path):
    out = subprocess.run([sys.executable, "-c", "from tests.samples import SAMPLES; print(SAMPLES)"], cwd=ROOT,
                         env={**os.environ, "PAMGATE_SHARED_SAMPLES": str(tmp_path)}, capture_output=True,
                         text=True)
    assert out.stdout.strip() == str(tmp_path), out.stderr
    skipped = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                              "tests/mappings/test_samples.py"], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "PAMGATE_SHARED_SAMPLES": str(tmp_path / "none")})
    assert "SKIPPED" in skipped.stdout and str(tmp_path / "none") in skipped.stdout, skipped.stdout
