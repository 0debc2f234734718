"""payswitch command line.

    payswitch --version
    payswitch serve [--config FILE] [--demo] [--log-format text|json] [--workers N|auto]
    payswitch sim acquirer|wallet|citycard|hsm|loyalty [simulator options]
    payswitch relay [parked | redeliver PARTNER] [--config FILE]
    payswitch keys new-master|init|import|list [options]
    payswitch send purchase|refund|balance|topup|preauth|completion|reversal|echo|signon|keyexchange|settlement [options]
    payswitch check-config FILE
    payswitch journal backup DEST | restore BACKUP [--config FILE | --journal PATH]
"""
from __future__ import annotations

import argparse
import os
import sys

from switch.secret_refs import shown


def _serve(args) -> int:
    from switch import compiled

    stale = compiled.problems()  # before anything imports them (switch/compiled.py)
    if stale:
        for line in stale:
            print(f"payswitch serve: {line}", file=sys.stderr)
        return 2
    from switch.io.app import run

    return run(args.config, demo=args.demo, log_format=args.log_format, workers=args.workers)


def _workers_arg(text: str) -> int | str:
    """``--workers``: a number of worker processes or ``auto`` (one per core)."""
    from switch.config import MAX_WORKERS

    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of worker processes or 'auto', got {text!r}") from None
    if not 1 <= n <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_WORKERS} or 'auto', got {n}")
    return n


def _check(args) -> int:
    """Every check ``serve`` makes before it starts anything; creates no file."""
    from switch import config, preflight

    if (args.file is None) == (args.config_file is None):
        print("payswitch check-config: give the configuration file once: check-config FILE "
              "(or check-config --config FILE)", file=sys.stderr)
        return 2
    path = args.file or args.config_file
    try:
        cfg = config.load(path)
        preflight.check(cfg, key_apart=True)
    except config.ConfigError as e:
        print(config.error_line(e, path), file=sys.stderr)
        return 2
    # A file may leave these out, but an operator who forgot one should see what it means.
    if "listeners" in cfg.left_out:
        lst = cfg.listeners[0]
        print(f"no listeners in {path}: the default listener applies ({lst.host}:{lst.port}, {lst.dialect})")
    if "merchants" in cfg.left_out:
        print(f"no merchants in {path}: no terminal is known, every request is answered 03 "
              "(the demo merchants come only with serve without --config)")
    print(f"{path}: ok ({len(cfg.routes)} routes, {len(cfg.acquirers)} acquirers, {len(cfg.merchants)} merchants)")
    return 0


# Published test card numbers (scheme and EMVCo test cards, the sandbox's);
# city cards starting 8800 are the sandbox centre's own.
TEST_PANS = frozenset({
    "4761739001010119", "4111111111111111", "4000056655665556", "4012888888881881", "5555555555554444",
    "5413330089010434", "5105105105105100", "2223000048400011", "6011111111111117", "6200000000000005",
    "6212345678901265", "378282246310005",
})


def _pan(args) -> str | None:
    """The card number from --pan-env, --pan-stdin or --pan (which shows it to ``ps`` and shell history)."""
    given = [k for k in ("pan", "pan_env", "pan_stdin") if getattr(args, k)]
    if len(given) > 1:
        raise SystemExit("error: give the card number once: --pan, --pan-env or --pan-stdin")
    if args.pan_env:
        pan = os.environ.get(args.pan_env)
        if pan is None:
            raise SystemExit(f"error: environment variable {shown(args.pan_env, 'env')} is not set")
        return pan.strip()
    if args.pan_stdin:
        return sys.stdin.readline().strip()
    if args.pan and args.pan not in TEST_PANS and not args.pan.startswith("8800"):
        print("warning: --pan puts the card number in the process list and shell history; "
              "for a real card use --pan-env NAME or --pan-stdin", file=sys.stderr)
    return args.pan


def _send(args) -> int:
    from native.panguard import mask_pans
    from switch.client import Terminal, build, describe

    args.pan = _pan(args)

    original = None
    if args.original_stan or args.original_time:
        if not (args.original_stan and args.original_time):
            print("error: --original-stan and --original-time go together", file=sys.stderr)
            return 2
        default_mti = {"completion": "0100", "reversal": "0200"}.get(args.kind, "0200")
        original = {"mti": args.original_mti or default_mti, "stan": args.original_stan, "time": args.original_time}
    elif args.kind in ("completion", "reversal"):
        print(f"error: {args.kind} needs --original-stan and --original-time (fields 11 and 7 of the original)", file=sys.stderr)
        return 2
    totals = tuple(args.totals) if args.totals else None
    tlv = None
    if args.counter is not None:
        if not args.pan:
            print("error: --counter needs --pan (the city card number)", file=sys.stderr)
            return 2
        tlv = _citycard_tags(args)
    elif args.kind == "topup":
        print("error: topup needs --pan and --counter (the card's data in field 48 tags CC and M1)", file=sys.stderr)
        return 2
    if args.coupon:  # field 48 CP: a coupon for the value-added services (docs/value-added-services.md)
        tlv = {**(tlv or {}), "CP": args.coupon}
    req = build(
        args.kind,
        terminal=args.terminal,
        merchant=args.merchant,
        pan=args.pan,
        amount=args.amount,
        currency=args.currency,
        expiry=args.expiry,
        entry=args.entry,
        code=args.code,
        stan=args.stan,
        original=original,
        totals=totals,
        tlv=tlv,
    )
    try:
        security = _terminal_security(args)
        pin = _read_pin(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if pin is not None and security is None:
        print("error: a PIN needs the terminal's keys (--sandbox-keys, --tmk-env/--tmk-file or --bdk-env/--bdk-file)",
              file=sys.stderr)
        return 2
    try:
        with Terminal(args.host, args.port, timeout=args.timeout, dialect=args.dialect) as t:
            if security is not None and security.needs_keys and (args.kind != "signon"):
                # Spec 8: session keys by 0800/101, under the TMK (a one-shot command keeps none).
                exchange = build("keyexchange", terminal=args.terminal)
                _show("→ key exchange", args, describe(exchange))
                answer = t.transact(exchange)
                _show("←", None, describe(answer))
                security.take_keys(answer)
                print(f"  session keys taken (check values {answer_kcvs(answer)})")
                if args.kind == "keyexchange":
                    return 0
            # Printed as sent: with the KSN, the PIN block's place and the MAC that protect() adds.
            wire = None if security is None or req["mti"] == "0800" else security.protect(req, t.codec, pin)
            _show("→", args, describe(req if wire is None else t.codec.decode(wire))
                  + ([f"   PIN block in field {security.pin_place()}, from the PIN given"] if pin is not None else []))
            if wire is None:
                resp = t.transact(req)
                mac = None
            else:
                out = t.transact_wire(wire)
                resp = t.codec.decode(out)
                mac = security.check(t.codec, out)
    except ValueError as e:  # a dialect that can't be loaded, an answer that can't be decoded, no keys given
        print(f"error: {mask_pans(str(e))}", file=sys.stderr)
        return 2
    except (OSError, ConnectionError) as e:
        print(f"error: {mask_pans(str(e))}", file=sys.stderr)
        return 1
    _show("←", None, describe(resp))
    if mac is not None:
        print(f"  MAC of the answer: {'ok' if mac else 'WRONG'}")
    if mac is False:
        return 4
    return 0 if resp.get(39) == "00" else 3


def _show(arrow: str, args, lines: list[str]) -> None:
    print(f"{arrow} {args.host}:{args.port}" if args is not None else arrow)
    for line in lines:
        print(line)


def answer_kcvs(answer) -> str:
    from native.iso8583 import parse_tlv48

    tags = parse_tlv48(answer[48])
    return f"TAK {tags.get('CA')}, TPK {tags.get('CP')}"


def _secret_hex(what: str, env: str | None, file: str | None) -> bytes | None:
    """A key as hex from an environment variable or a file: never from the command line."""
    import os

    if env is not None:
        text = os.environ.get(env)
        if text is None:
            raise ValueError(f"environment variable {shown(env, 'env')} ({what}) is not set")
    elif file is not None:
        try:
            with open(file) as f:
                text = f.read()
        except OSError as e:
            raise ValueError(f"{what} file {shown(file, 'file')}: {e.strerror}") from None
    else:
        return None
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise ValueError(f"{what} is not hex") from None
    if len(key) not in (16, 24, 32):
        raise ValueError(f"{what} must be 16, 24 or 32 bytes, got {len(key)}")
    return key


def _terminal_security(args):
    from switch.client import TerminalSecurity, sandbox_keys

    tmk = _secret_hex("TMK", args.tmk_env, args.tmk_file)
    bdk = _secret_hex("BDK", args.bdk_env, args.bdk_file)
    if args.sandbox_keys:
        if tmk is not None or bdk is not None:
            raise ValueError("--sandbox-keys or given keys, not both")
        kind, algorithm, key = sandbox_keys(args.terminal)
        return TerminalSecurity(algorithm, ksn=args.ksn, **{kind: key})
    if tmk is not None and bdk is not None:
        raise ValueError("a TMK or a BDK, not both")
    if tmk is None and bdk is None:
        return None
    return TerminalSecurity(args.algorithm, tmk=tmk, bdk=bdk, ksn=args.ksn)


def _read_pin(args) -> str | None:
    """The PIN from an environment variable or standard input: never from the command line."""
    import os

    if args.pin_env is not None:
        pin = os.environ.get(args.pin_env)
        if pin is None:
            raise ValueError(f"environment variable {shown(args.pin_env, 'env')} (the PIN) is not set")
    elif args.pin_stdin:
        pin = sys.stdin.readline()
    else:
        return None
    pin = pin.strip()
    if not (4 <= len(pin) <= 12 and pin.isdigit()):
        raise ValueError("a PIN is 4 to 12 digits")
    return pin


def _citycard_tags(args) -> dict[str, str]:
    """What a sandbox city card would put in field 48: CC (and M1 for a top-up), keyed
    with the public demo master key of spec section 4.1."""
    from adapters.citycard import crypto
    from adapters.citycard.centre import DEMO_MK

    dk = crypto.derive_dk(DEMO_MK, args.pan)
    parts = (dk, args.pan, "%05d" % args.counter, "%012d" % args.amount, args.serial, args.terminal)
    tags = {"CC": "%05d%012d%s%s" % (args.counter, args.card_balance, args.serial, crypto.tac(*parts))}
    if args.kind == "topup":
        tags["M1"] = crypto.mac1(*parts)
    return tags


def _sim(args, rest) -> int:
    if args.kind == "acquirer":
        from adapters.card.sim import main
    elif args.kind == "wallet":
        from adapters.wallet.sim import main
    elif args.kind == "hsm":
        from adapters.hsm.sim import main
    elif args.kind == "loyalty":
        from adapters.loyalty.sim import main
    else:
        from adapters.citycard.sim import main
    return main(rest) or 0


def version() -> str:
    """The installed distribution's version, or pyproject.toml's in a source checkout."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("payswitch")
    except PackageNotFoundError:
        import tomllib
        from pathlib import Path

        try:
            with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as f:
                return tomllib.load(f)["project"]["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="payswitch", description="ISO 8583 payment switch")
    p.add_argument("--version", action="version", version=f"payswitch {version()}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the switch (no --config: the embedded sandbox default)")
    s.add_argument("--config", help="TOML configuration file")
    s.add_argument("--demo", action="store_true", help="send one sample purchase through once started")
    s.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="text lines, or one JSON object per event (ts, level, logger, msg, rrn, terminal)")
    s.add_argument("--workers", type=_workers_arg, metavar="N|auto",
                   help="worker processes serving terminals (overrides [server] workers; auto: one per core)")
    s.set_defaults(func=_serve)

    c = sub.add_parser("check-config", help="make every start-up check of serve on a configuration file and exit")
    c.add_argument("file", nargs="?", help="the configuration file (or --config FILE, as for serve)")
    c.add_argument("--config", dest="config_file", metavar="FILE", help=argparse.SUPPRESS)
    c.set_defaults(func=_check)

    sim = sub.add_parser("sim", help="run a bundled simulator (acquirer, wallet, citycard, hsm)", add_help=False)
    sim.add_argument("kind", choices=["acquirer", "wallet", "citycard", "hsm", "loyalty"])
    sub.add_parser("relay", help="relay the journal's event outbox to NATS and webhooks", add_help=False)
    sub.add_parser("keys", help="the software security module's key store (new-master, init, import, list)", add_help=False)
    sub.add_parser("journal", help="back up the running switch's journal (backup DEST), or restore one (restore BACKUP)",
                   add_help=False)

    t = sub.add_parser("send", help="a command-line terminal: send one request and print the answer")
    t.add_argument(
        "kind",
        choices=["purchase", "refund", "balance", "topup", "preauth", "completion", "reversal", "echo", "signon",
                 "keyexchange", "settlement"],
    )
    t.add_argument("--host", default="127.0.0.1")
    t.add_argument("--port", type=int, default=8583)
    t.add_argument(
        "--dialect",
        default="terminal-87",
        help="the listener's dialect: terminal-87 (8583), iso87-ascii (the sandbox's 8584), host-87-bcd or a dialect file",
    )
    t.add_argument("--terminal", default="DEMO0001", help="field 41")
    t.add_argument("--merchant", default="DEMO00000000001", help="field 42")
    t.add_argument("--pan", help="field 2 (card number); test cards only, a real one: --pan-env or --pan-stdin")
    t.add_argument("--pan-env", metavar="NAME", help="read field 2 from this environment variable")
    t.add_argument("--pan-stdin", action="store_true", help="read field 2 from the first line of standard input")
    t.add_argument("--code", help="bar-code payment code (field 48 tag BC)")
    t.add_argument("--amount", type=int, default=0, help="minor units (field 4)")
    t.add_argument("--currency", help="field 49 (default 978 for cards, 156 for wallet codes)")
    t.add_argument("--expiry", help="field 14, YYMM")
    t.add_argument("--entry", help="field 22 (default 051 chip, 031 bar code)")
    t.add_argument("--stan", help="field 11 (default: a fresh one)")
    t.add_argument("--original-stan", help="field 11 of the original (completion, reversal)")
    t.add_argument("--original-time", help="field 7 of the original (completion, reversal)")
    t.add_argument("--original-mti", help="MTI of the original (default 0200, or 0100 for a completion)")
    t.add_argument("--totals", type=int, nargs=4, metavar=("CREDITS", "DEBITS", "CREDIT_AMT", "DEBIT_AMT"))
    t.add_argument("--counter", type=int,
                   help="city card: the card's transaction counter; builds field 48 CC (and M1 for topup) "
                        "with the sandbox's demo key (spec 4.1)")
    t.add_argument("--card-balance", type=int, default=10000, help="city card: the balance the card reports (minor units)")
    t.add_argument("--serial", default="0000000001", help="city card: the terminal's transaction serial (10 digits)")
    t.add_argument("--coupon", help="coupon code for the merchant's value-added services (field 48 tag CP)")
    t.add_argument("--timeout", type=float, default=65.0)
    k = t.add_argument_group("terminal security (spec 8)", "keys are read from a file or an environment "
                             "variable, never from the command line; each request is preceded by a key "
                             "exchange (0800/101) when the terminal uses session keys")
    k.add_argument("--sandbox-keys", action="store_true",
                   help="the public demo keys of the sandbox's DEMOSEC terminals (spec 7): SEC00001-099 TDES, "
                        "SEC00100-199 AES, SEC00200-299 TDES DUKPT")
    k.add_argument("--tmk-env", metavar="VAR", help="the terminal master key (hex) from this environment variable")
    k.add_argument("--tmk-file", metavar="FILE", help="the terminal master key (hex) from this file")
    k.add_argument("--bdk-env", metavar="VAR", help="a test DUKPT base derivation key (hex) from this variable")
    k.add_argument("--bdk-file", metavar="FILE", help="a test DUKPT base derivation key (hex) from this file")
    k.add_argument("--algorithm", choices=["tdes", "aes"], default="tdes", help="of the given TMK (default tdes)")
    k.add_argument("--ksn", help="DUKPT key serial number, 20 hex digits (default: a fresh one)")
    k.add_argument("--pin-env", metavar="VAR", help="PIN (field 52) from this environment variable")
    k.add_argument("--pin-stdin", action="store_true", help="PIN (field 52) from the first line of standard input")
    t.set_defaults(func=_send)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["sim"]:
        # the simulator owns the rest of the arguments
        if len(argv) < 2 or argv[1] not in ("acquirer", "wallet", "citycard", "hsm", "loyalty"):
            print("usage: payswitch sim acquirer|wallet|citycard|hsm|loyalty [options]", file=sys.stderr)
            return 2
        return _sim(argparse.Namespace(kind=argv[1]), argv[2:])
    if argv[:1] == ["relay"]:  # the event relay (switch.events) owns the rest of the arguments
        from switch.events import main as relay_main

        return relay_main(argv[1:])
    if argv[:1] == ["keys"]:
        from switch.security.keycli import main as keys_main

        return keys_main(argv[1:])
    if argv[:1] == ["journal"]:
        from switch.journal.backup import main as journal_main

        return journal_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
