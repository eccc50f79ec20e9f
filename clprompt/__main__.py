"""``clprompt`` (installed as a command, or ``python -m clprompt``): the version, and the three commands.

    clprompt --version                 # clprompt's version and commit, and what it runs on
    clprompt run scenario=... method=...   # = python -m clprompt.run ...
    clprompt report <dir>              # = python -m clprompt.report ...
    clprompt pretrain                  # = python -m clprompt.pretrain ...
"""

from __future__ import annotations

import runpy
import sys

COMMANDS = {"run": "clprompt.run", "report": "clprompt.report", "pretrain": "clprompt.pretrain"}


def main() -> None:
    arguments = sys.argv[1:]
    if not arguments or arguments[0] in ("-h", "--help"):
        print(__doc__.strip())
        return
    if arguments[0] == "--version":
        from clprompt.run import version_line

        print(version_line())
        return
    if arguments[0] not in COMMANDS:
        sys.exit(f"clprompt: unknown command {arguments[0]!r}; the commands: {', '.join(COMMANDS)} (or --version)")
    sys.argv = [f"clprompt {arguments[0]}", *arguments[1:]]
    runpy.run_module(COMMANDS[arguments[0]], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
