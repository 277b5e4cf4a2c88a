"""`pamgate console hash-password`: the argon2 hash for `console.users[].password_hash`."""
from __future__ import annotations

import getpass
import sys

from console.access import console_hash_password


def hash_password(stdin=None, stdout=None) -> int:
    """Reads the password (a prompt on a terminal, else the first line of stdin), prints its hash."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    if stdin.isatty():
        password = getpass.getpass("Mot de passe : ")
        if getpass.getpass("Confirmation : ") != password:
            print("pamgate: the two passwords differ", file=sys.stderr)
            return 2
    else:
        password = stdin.readline().rstrip("\r\n")
    if not password:
        print("pamgate: empty password", file=sys.stderr)
        return 2
    print(console_hash_password(password), file=stdout)
    return 0
