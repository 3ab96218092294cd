"""The ``convlab`` command (also ``python -m convlab``): demo, backends, compare."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import convlab as cl


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="convlab", description=cl.__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="walk through the chapter and its exercises")
    demo.add_argument("--backend", help="numpy (default), torch, tensorflow, jax or mxnet")
    demo.add_argument("--plot", metavar="FILE.png", help="also draw image, kernel, output and learning curve")
    commands.add_parser("backends", help="list installed backends with versions")
    compare = commands.add_parser("compare", help="run the equivalence cases on backends and print the error table")
    compare.add_argument("--backends", nargs="+", metavar="NAME", help="backends to run (default: all installed)")
    compare.add_argument("--save", metavar="FILE.npz", help="save the results as a bundle")
    compare.add_argument("--load", nargs="+", metavar="FILE.npz", default=[], help="compare saved bundles too")
    compare.add_argument(
        "--require", nargs="+", metavar="NAME", default=[], help="fail unless these backends are present"
    )
    compare.add_argument("--json", action="store_true", help="print the table as JSON")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from convlab import demo as demo_module

            demo_module.run(args.backend, args.plot)
            return 0
        if args.command == "backends":
            installed = cl.backends()
            width = max(len(name) for name in installed)
            print(f"{'backend':<{width}}  version")
            for name, version in installed.items():
                print(f"{name:<{width}}  {version}")
            return 0
        from convlab import testing

        return testing.compare_command(args.backends, args.save, args.load, args.require, args.json)
    except cl.ConvlabError as error:
        print(f"convlab {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
