"""The `edgevision` command's entry point: runs the commands (commands.py) and turns errors into
one line and an honest exit code (1 on an error, 130 on Ctrl-C, 143 on SIGTERM where `run` handles it)."""

from __future__ import annotations

import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    try:
        from edgevision.commands import app, state
    except ImportError as e:
        print(f"error: the edgevision command needs the 'cli' extra ({e.name} is missing): pip install 'edgevision[cli]'",
              file=sys.stderr)
        return 2
    from edgevision.errors import EdgeVisionError, Terminated

    try:
        code = app(args=argv, standalone_mode=False)  # typer returns 130 for Ctrl-C, N for typer.Exit(N)
    except EdgeVisionError as e:
        if state["debug"]:
            if getattr(e, "log", None):
                print(e.log, file=sys.stderr)
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print("terminated" if isinstance(e, Terminated) else "interrupted", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except Exception as e:  # usage errors (typer's vendored click) and the like
        from typer.exceptions import Abort, TyperException

        if isinstance(e, TyperException) and hasattr(e, "show"):
            e.show()
            return int(getattr(e, "exit_code", 2))
        if isinstance(e, Abort):
            return 1
        raise
    if code in (130, 143):
        print("interrupted" if code == 130 else "terminated", file=sys.stderr)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
