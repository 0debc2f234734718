"""payswitch command line.

    payswitch serve [--config FILE] [--demo]
    payswitch sim acquirer|wallet|citycard|hsm [simulator options]
    payswitch keys new-master|init|import|list [options]
    payswitch send purchase|refund|balance|preauth|completion|reversal|echo|signon|settlement [options]
    payswitch check-config FILE
"""
from __future__ import annotations

import argparse
import sys


def _serve(args) -> int:
    from switch.io.app import run

    return run(args.config, demo=args.demo)


def _check(args) -> int:
    from switch import config

    try:
        cfg = config.load(args.file)
    except config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
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
    )
    print(f"→ {args.host}:{args.port}")
    for line in describe(req):
        print(line)
    try:
        with Terminal(args.host, args.port, timeout=args.timeout) as t:
            resp = t.transact(req)
    except (OSError, ConnectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("←")
    for line in describe(resp):
        print(line)
    return 0 if resp.get(39) == "00" else 3


def _sim(args, rest) -> int:
    if args.kind == "acquirer":
        from adapters.card.sim import main
    elif args.kind == "wallet":
        from adapters.wallet.sim import main
    elif args.kind == "hsm":
        from adapters.hsm.sim import main
    else:
        from adapters.citycard.sim import main
    return main(rest) or 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="payswitch", description="ISO 8583 payment switch")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the switch (no --config: the embedded sandbox default)")
    s.add_argument("--config", help="TOML configuration file")
    s.add_argument("--demo", action="store_true", help="send one sample purchase through once started")
    s.set_defaults(func=_serve)

    c = sub.add_parser("check-config", help="validate a configuration file and exit")
    c.add_argument("file")
    c.set_defaults(func=_check)

    sim = sub.add_parser("sim", help="run a bundled simulator (acquirer, wallet, citycard, hsm)", add_help=False)
    sim.add_argument("kind", choices=["acquirer", "wallet", "citycard", "hsm"])
    sub.add_parser("keys", help="the software security module's key store (new-master, init, import, list)", add_help=False)

    t = sub.add_parser("send", help="a command-line terminal: send one request and print the answer")
    t.add_argument(
        "kind",
        choices=["purchase", "refund", "balance", "topup", "preauth", "completion", "reversal", "echo", "signon", "settlement"],
    )
    t.add_argument("--host", default="127.0.0.1")
    t.add_argument("--port", type=int, default=8583)
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
    t.add_argument("--timeout", type=float, default=65.0)
    t.set_defaults(func=_send)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["sim"]:
        # the simulator owns the rest of the arguments
        if len(argv) < 2 or argv[1] not in ("acquirer", "wallet", "citycard", "hsm"):
            print("usage: payswitch sim acquirer|wallet|citycard|hsm [options]", file=sys.stderr)
            return 2
        return _sim(argparse.Namespace(kind=argv[1]), argv[2:])
    if argv[:1] == ["keys"]:
        from switch.security.keycli import main as keys_main

        return keys_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
