"""The ``convlab`` command (also ``python -m convlab``): demo, backends, compare, explain.

Output cut short (``convlab demo | head``) ends the command quietly with exit status 141 (128 + SIGPIPE),
what a shell reports for ``cat``, ``seq`` or ``yes`` in the same place, so ``set -o pipefail`` scripts see
that the output was not read to the end; no traceback is printed.
"""

from __future__ import annotations

import argparse
import os
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
    _add_explain(commands)
    args = parser.parse_args(argv)
    try:
        status = _run(args)
        sys.stdout.flush()  # why here: a reader that left early is seen now, not at interpreter exit
        return status
    except BrokenPipeError:
        return _output_cut()


#: the exit status when the reader of standard output left before the end: 128 + SIGPIPE, as a shell reports it
EXIT_OUTPUT_CUT = 141


def _output_cut() -> int:
    """Standard output's reader went away: send the rest of the output nowhere and end quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # why: the interpreter's final flush would raise again
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (replaced by a test harness)
        pass
    return EXIT_OUTPUT_CUT


def _add_explain(commands) -> None:
    explain = commands.add_parser(
        "explain",
        help="explicit pads, output shape and each framework's native arguments for a conv or pooling configuration",
        description="Print the explicit pads and output shape of a convolution or pooling configuration, and for "
        "torch, TensorFlow/Keras, JAX (lax) and MXNet the native call that computes it, or the nearest one and "
        "how it differs. Sizes are N or HxW; --padding is same, valid, P, PHxPW or TOP,BOTTOM,LEFT,RIGHT.",
    )
    kinds = explain.add_subparsers(dest="what", required=True)
    for name, window, text in (("conv", "--kernel", "kernel size"), ("pool", "--window", "pooling window")):
        sub = kinds.add_parser(name, help=f"a {'convolution' if name == 'conv' else 'pooling'} configuration")
        sub.add_argument("--input", required=True, metavar="HxW", help="input height x width (e.g. 8x8 or 8)")
        sub.add_argument(window, required=True, metavar="KHxKW", help=text)
        default = "1" if name == "conv" else "the window"
        sub.add_argument("--stride", metavar="SHxSW", help=f"stride (default: {default})")
        sub.add_argument("--padding", default="0", metavar="PADDING", help="same, valid, P, PHxPW or T,B,L,R")
        if name == "conv":
            sub.add_argument("--dilation", default="1", metavar="DHxDW", help="kernel dilation (default: 1)")
        else:
            sub.add_argument("--mode", choices=("max", "avg"), default="max", help="max (default) or avg")
            sub.add_argument(
                "--count-include-pad",
                action=argparse.BooleanOptionalAction,
                default=True,
                help="average pooling divides by the window area, padded zeros counted (default), or by the "
                "real pixels under each window (--no-count-include-pad)",
            )
        sub.add_argument("--json", action="store_true", help="print the explanation as JSON")


def _run(args: argparse.Namespace) -> int:
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
        if args.command == "explain":
            import json

            from convlab.explain import explain_command

            explanation = explain_command(args)
            print(json.dumps(explanation.as_dict(), indent=2) if args.json else explanation.format())
            return 0
        from convlab import testing

        return testing.compare_command(args.backends, args.save, args.load, args.require, args.json)
    except cl.ConvlabError as error:
        print(f"convlab {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
