"""`pamgate config check`: the configuration loaded and checked as `serve` would, nothing started."""
from __future__ import annotations

import sys

from engine import config as configuration
from engine.assembly import check_configuration


def check(args) -> int:
    cfg = configuration.load(args.config)
    checked, problems = check_configuration(cfg)
    print(f"configuration: {cfg.source or 'no file: the defaults'}")
    for line in checked:
        print(f"  checked {line}")
    for line in problems:
        print(f"pamgate: {line}", file=sys.stderr)
    if problems:
        return 2
    print("pamgate: config ok")
    return 0
