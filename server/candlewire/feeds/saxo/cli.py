"""``candlewire saxo login``: the login flow for an operator without a browser on the server.

It prints Saxo's sign-in URL; the operator opens it anywhere, signs in, and
Saxo redirects that browser to the redirect URL. The operator pastes the
address the browser was sent to (it holds ``code`` and ``state``; the page
itself may fail to load, which does not matter), and the command exchanges
the code and saves the tokens in the deployment's token store (Redis, or the
token file), where the running service finds them by itself. Nothing secret
is printed.
"""

from __future__ import annotations

import sys
from typing import TextIO
from urllib.parse import parse_qs, urlsplit

from candlewire.errors import CandlewireError
from candlewire.feeds.saxo.setup import SaxoSettings, build

__all__ = ["login"]


async def login(
    settings: SaxoSettings, *, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout
) -> int:
    """Run one login; 0 on success, 1 when it failed (the reason is printed)."""
    parts = build(settings)
    try:
        url = await parts.flow.start()
        print("Open this address, sign in at Saxo, then paste the address Saxo sent", file=stdout)
        print("your browser to (it starts with the redirect URL):", file=stdout)
        print(url, file=stdout, flush=True)
        answer = stdin.readline().strip()
        query = {k: v[0] for k, v in parse_qs(urlsplit(answer).query).items()}
        if "error" in query:
            print(f"Saxo did not log in ({query['error'][:40]})", file=stdout)
            return 1
        try:
            tokens = await parts.flow.complete(query.get("state", ""), query.get("code", ""))
        except CandlewireError as error:
            print(f"login failed: {error}", file=stdout)
            return 1
        print(
            f"Saxo login saved (version {tokens.version}); the service resumes by itself.",
            file=stdout,
        )
        return 0
    finally:
        await parts.store.close()
