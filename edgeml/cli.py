"""The `edgeml` command line: a thin shell over the Python API (see `edgeml <verb> --help`)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback
from typing import NoReturn

from edgeml import __version__
from edgeml.errors import EdgeMLError


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (the verb, the problem, where to look), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every verb found in `edgeml.commands`."""
    import edgeml.commands as pkg

    parser = OneLineParser(
        prog="edgeml",
        description="Efficient AI from research to edge devices: compressed-domain spiking video "
        "recognition, LLS local learning and CURE concept erasure, with export and measurement.",
        epilog="Run `edgeml VERB --help` for the options of one verb.",
    )
    parser.add_argument("--version", action="version", version=f"edgeml {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EdgeMLError as e:
        return _fail(args, str(e))
    except OSError as e:  # a disk, permission or file-system problem met after validation
        where = f"{e.filename}: " if e.filename else ""
        return _fail(args, f"{where}{e.strerror or e}")
    except MemoryError:
        return _fail(args, "out of memory; try a smaller --batch-size or fewer --workers")
    except KeyboardInterrupt:
        print("edgeml: interrupted", file=sys.stderr)
        return 130


def _fail(args: argparse.Namespace, message: str) -> int:
    if args.debug:
        traceback.print_exc()
    print(f"edgeml: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
