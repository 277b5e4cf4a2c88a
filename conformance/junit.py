"""`--junit FILE`: one test case per message (its ACK) and per expectation, in the JUnit XML that CI reads."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from conformance import checks as C


def write(run, path: str) -> None:
    """One test suite per scenario (a run of several names each), one case per message and expectation."""
    suites = ET.Element("testsuites", name="pamgate replay")
    for part in run.parts or [run]:
        _suite(suites, part)
    ET.indent(suites)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def _suite(suites, run) -> None:
    suite = ET.SubElement(suites, "testsuite", name=run.title, timestamp=run.started_at.isoformat(timespec="seconds"),
                          time=f"{run.seconds:.3f}")
    counts = {"tests": 0, "failures": 0, "skipped": 0}
    props = ET.SubElement(suite, "properties")
    for k, v in (("mode", run.where), ("expectations", run.expectations_file or "(none: every message must be AA)"),
                 ("paths", " ".join(run.paths)), ("config", run.config or "(default)")):
        ET.SubElement(props, "property", name=k, value=v)
    for m in run.messages:
        classname = f"{run.title}.{m.message.label}"
        for c in m.checks:
            case = ET.SubElement(suite, "testcase", classname=classname, name=c.name + (f" — {c.title}" if c.title else ""))
            counts["tests"] += 1
            if c.status == C.FAILED:
                counts["failures"] += 1
                f = ET.SubElement(case, "failure", message=f"expected {c.expected}; got {c.actual}", type=c.kind)
                f.text = f"{c.name}\nexpected: {c.expected}\ngot:      {c.actual}\n"
            elif c.status == C.SKIPPED:
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=c.actual)
            else:
                out = ET.SubElement(case, "system-out")
                out.text = c.actual
    for k, v in counts.items():
        suite.set(k, str(v))
    suite.set("errors", "0")
