"""``payswitch keys``: create and fill the software module's key store.

    payswitch keys new-master --out FILE            a fresh master key, written 0600
    payswitch keys init --store FILE (--master-key-file F | --master-key-env VAR) [--sandbox]
    payswitch keys import --store FILE --name N --kind K --algorithm tdes|aes --kcv HEX6 (master key as above) [--sandbox]
        the clear key (hex; or two or three components, one per line, XORed) is read from stdin, never argv;
        the sandbox's public keys (spec 7) are refused unless --sandbox
    payswitch keys list --store FILE (master key as above)
"""
from __future__ import annotations

import argparse
import os
import sys

from switch.secret_refs import open_to_others

from . import keystore
from .coredump import no_core_dumps
from .ciphers import xor
from .keys import KINDS
from .sandbox_only import is_demo_key


def _master(args) -> bytes:
    if args.master_key_file is not None:
        why = open_to_others(args.master_key_file)  # warned as serve and check-config warn (preflight)
        if why:
            print(f"warning: {why} - at `--master-key-file`", file=sys.stderr)
    return keystore.read_master_key(args.master_key_file, args.master_key_env)


def _read_clear(stream) -> bytes:
    parts = [line.strip().replace(" ", "") for line in stream.read().splitlines() if line.strip()]
    if not parts:
        raise keystore.KeyStoreError("no key on stdin")
    try:
        components = [bytes.fromhex(p) for p in parts]
    except ValueError:
        raise keystore.KeyStoreError("the key on stdin is not hex") from None
    if len({len(c) for c in components}) != 1:
        raise keystore.KeyStoreError("key components on stdin differ in length")
    key = components[0]
    for c in components[1:]:
        key = xor(key, c)
    return key


def _not_demo(args, key: bytes, what: str) -> None:
    """Refuse one of the sandbox's public keys for a store that is not a sandbox's (``--sandbox``)."""
    if not args.sandbox and is_demo_key(key):
        raise keystore.KeyStoreError(f"{what} is a public sandbox key (spec 7): refused for a store "
                                     "that is not a sandbox's (--sandbox)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="payswitch keys", description="the software security module's key store")
    sub = p.add_subparsers(dest="command", required=True)
    nm = sub.add_parser("new-master", help="write a fresh master key (64 hex digits) to a new file, mode 0600")
    nm.add_argument("--out", required=True)
    for name in ("init", "import", "list"):
        s = sub.add_parser(name)
        s.add_argument("--store", required=True)
        g = s.add_mutually_exclusive_group(required=True)
        g.add_argument("--master-key-file")
        g.add_argument("--master-key-env")
        if name == "import":
            s.add_argument("--name", required=True)
            s.add_argument("--kind", required=True, choices=KINDS)
            s.add_argument("--algorithm", required=True, choices=["tdes", "aes"])
            s.add_argument("--kcv", required=True, help="the key's check value (6 hex digits)")
        if name in ("init", "import"):
            s.add_argument("--sandbox", action="store_true",
                           help="a sandbox's store: the public demo keys and master key of spec 7 are allowed")
    args = p.parse_args(argv)
    no_core_dumps()  # it holds clear keys and the master key
    try:
        if args.command == "new-master":
            fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(keystore.new_master_key() + "\n")
            print(f"{args.out}: new master key (keep it apart from the key store)")
        elif args.command == "init":
            master = _master(args)
            _not_demo(args, master, "the master key")
            keystore.create(args.store, master)
            print(f"{args.store}: empty key store")
        elif args.command == "import":
            master = _master(args)
            _not_demo(args, master, "the master key")
            if sys.stdin.isatty():
                print("clear key (hex), or its components one per line; end with Ctrl-D:", file=sys.stderr)
            clear = _read_clear(sys.stdin)
            _not_demo(args, clear, f"key {args.name!r}")
            entry = keystore.add(args.store, master, args.name, args.kind, args.algorithm, clear, args.kcv)
            print(f"{args.store}: {entry.name} ({entry.kind}, {entry.algorithm}) kcv {entry.kcv}")
        else:
            for e in keystore.load(args.store, _master(args)).values():
                print(f"{e.name}\t{e.kind}\t{e.algorithm}\t{e.kcv}")
    except (keystore.KeyStoreError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
