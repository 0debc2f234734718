"""``payswitch keys``: create and fill the software module's key store.

    payswitch keys new-master --out FILE            a fresh master key, written 0600
    payswitch keys init --store FILE (--master-key-file F | --master-key-env VAR)
    payswitch keys import --store FILE --name N --kind K --algorithm tdes|aes --kcv HEX6 (master key as above)
        the clear key (hex; or two or three components, one per line, XORed) is read from stdin, never argv
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
    args = p.parse_args(argv)
    no_core_dumps()  # it holds clear keys and the master key
    try:
        if args.command == "new-master":
            fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(keystore.new_master_key() + "\n")
            print(f"{args.out}: new master key (keep it apart from the key store)")
        elif args.command == "init":
            keystore.create(args.store, _master(args))
            print(f"{args.store}: empty key store")
        elif args.command == "import":
            if sys.stdin.isatty():
                print("clear key (hex), or its components one per line; end with Ctrl-D:", file=sys.stderr)
            entry = keystore.add(
                args.store, _master(args), args.name, args.kind, args.algorithm, _read_clear(sys.stdin), args.kcv
            )
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
