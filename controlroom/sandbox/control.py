"""Drive a running sandbox the way CI/CD drives a real platform: deploy or roll back a
version. The sandbox's config uses this as its deploy command.

    python -m controlroom.sandbox.control --url URL --token-env VAR deploy v2.15.0
"""

from __future__ import annotations

import argparse
import os
import sys

import httpx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controlroom.sandbox.control", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the sandbox's base URL")
    parser.add_argument("--token-env", required=True, help="environment variable holding the admin token")
    parser.add_argument("action", choices=("deploy", "rollback"))
    parser.add_argument("version")
    args = parser.parse_args(argv)
    token = os.environ.get(args.token_env)
    if not token:
        print(f"error: {args.token_env} is not set", file=sys.stderr)
        return 2
    try:
        response = httpx.post(
            f"{args.url.rstrip('/')}/_sandbox/{args.action}",
            json={"version": args.version},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10.0,
        )
    except httpx.HTTPError as error:
        print(f"error: {args.action} failed: {error}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"error: {args.action} answered {response.status_code}: {response.text[:200]}", file=sys.stderr)
        return 1
    print(f"{args.action} {args.version}: {response.text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
