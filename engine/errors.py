"""The error a command's bad input raises: its message is the one line the CLI prints on stderr.

It lives here, low in the house, because the replay (conformance/) raises it as well as the commands of
`pamgate/`; the CLI turns it into `pamgate: <message>` and exit status 2."""
from __future__ import annotations


class CommandError(Exception):
    """One line for stderr."""
