"""Where the shared real-message samples are, or a clear skip. They are looked for at
$PAMGATE_SHARED_SAMPLES, else at ../shared/samples beside the checkout."""
import os
from pathlib import Path

import pytest

SAMPLES_ENV = "PAMGATE_SHARED_SAMPLES"
SAMPLES = Path(os.environ.get(SAMPLES_ENV) or Path(__file__).resolve().parent.parent.parent / "shared" / "samples")


def sample_dir(name: str) -> Path:
    d = SAMPLES / name
    if not d.is_dir():
        pytest.skip(f"{d} is absent: the shared samples are not beside this checkout "
                    f"(set {SAMPLES_ENV}=FOLDER to point at them)")
    return d


def read_sample(path: Path) -> str:
    """The file's message, segments joined by CR (the ANS files use LF), read as `pamgate replay` reads it."""
    from conformance.messages import read_message_file
    (message,) = read_message_file(str(path))
    return message
