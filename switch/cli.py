"""payswitch command line: serve | sim | send."""
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    print("payswitch: not built yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
