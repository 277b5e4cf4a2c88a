"""Hostile MLLP frames through a real `pamgate serve` (README "MLLP and the meaning of each ACK").

Every complete frame gets exactly one well-formed ACK, in order, whose MSA-2 echoes a readable MSH-10;
no `207` (the store never fails here); the server lives, logs no unhandled error, and still applies and
decides a normal message afterwards. PAMGATE_FUZZ_SEED and PAMGATE_FUZZ_FRAMES change the run.
"""
import time
from functools import lru_cache

from tests.fuzz.checks import check_alive_and_correct, check_log
from tests.fuzz.conftest import DUMP, FIGURES, FRAMES, MAX_FRAME, PER_CONNECTION, SEED
from tests.fuzz.hostile_frames import FrameFactory
from tests.fuzz.wire import Findings, run_sessions


@lru_cache(maxsize=1)
def hostile_sessions():
    """Generated once a run: both backends get the same frames."""
    return FrameFactory(SEED, MAX_FRAME).sessions(FRAMES, PER_CONNECTION)


def test_hostile_frames_each_get_one_true_ack(fuzz_server):
    t0 = time.monotonic()
    sessions = hostile_sessions()
    frames = sum(len(s.frames) for s in sessions)
    t1 = time.monotonic()
    findings = Findings(keep=200 if DUMP else 0)
    acks = run_sessions(fuzz_server.mllp_port, sessions, findings, connections=8)
    t2 = time.monotonic()
    check_alive_and_correct(fuzz_server, findings)
    fuzz_server.stop()
    check_log(fuzz_server, findings)
    FIGURES.append(f"mllp[{fuzz_server.backend}]: {frames} frames ({FRAMES} written) on {len(sessions)} connections "
                   f"({sum(s.half_close for s in sessions)} half-closed), {acks} ACKs, generated in {t1 - t0:.1f} s, "
                   f"sent and answered in {t2 - t1:.1f} s; failure classes: {len(findings.classes)}")
    if DUMP:
        findings.dump(DUMP)
    assert not findings, f"seed {SEED}, {frames} frames:\n{findings.report()}"
