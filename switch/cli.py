"""payswitch command line.

    payswitch --version
    payswitch serve [--config FILE] [--demo] [--log-format text|json]
    payswitch sim acquirer|wallet|citycard|hsm|loyalty [simulator options]
    payswitch relay [--config FILE]
    payswitch keys new-master|init|import|list [options]
    payswitch send purchase|refund|balance|topup|preauth|completion|reversal|echo|signon|settlement [options]
    payswitch check-config FILE
"""
from __future__ import annotations

import argparse
import sys


def _serve(args) -> int:
    from switch.io.app import run

    return run(args.config, demo=args.demo, log_format=args.log_format)


def _check(args) -> int:
    """Every check ``serve`` makes before it starts anything; creates no file."""
    from switch import config, preflight

    try:
        cfg = config.load(args.file)
        preflight.check(cfg)
    except config.ConfigError as e:
        print(config.error_line(e), file=sys.stderr)
        return 2
    print(f"{args.file}: ok ({len(cfg.routes)} routes, {len(cfg.acquirers)} acquirers, {len(cfg.merchants)} merchants)")
    return 0


def _send(args) -> int:
    from switch.client import Terminal, build, describe

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
    print(f"→ {args.host}:{args.port}")
    for line in describe(req):
        print(line)
    try:
        with Terminal(args.host, args.port, timeout=args.timeout, dialect=args.dialect) as t:
            resp = t.transact(req)
    except ValueError as e:  # a dialect that can't be loaded (an answer that can't be decoded)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (OSError, ConnectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("←")
    for line in describe(resp):
        print(line)
    return 0 if resp.get(39) == "00" else 3


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
    s.set_defaults(func=_serve)

    c = sub.add_parser("check-config", help="make every start-up check of serve on a configuration file and exit")
    c.add_argument("file")
    c.set_defaults(func=_check)

    sim = sub.add_parser("sim", help="run a bundled simulator (acquirer, wallet, citycard, hsm)", add_help=False)
    sim.add_argument("kind", choices=["acquirer", "wallet", "citycard", "hsm", "loyalty"])
    sub.add_parser("relay", help="relay the journal's event outbox to NATS and webhooks", add_help=False)
    sub.add_parser("keys", help="the software security module's key store (new-master, init, import, list)", add_help=False)

    t = sub.add_parser("send", help="a command-line terminal: send one request and print the answer")
    t.add_argument(
        "kind",
        choices=["purchase", "refund", "balance", "topup", "preauth", "completion", "reversal", "echo", "signon", "settlement"],
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
    t.add_argument("--pan", help="field 2 (card number)")
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
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
