"""chaos, in Python: misbehaves on purpose, for the tests. Input `{"mode": M}`:
`recurse` overflows the wasm stack (a trap, after a line on stderr), `abort`
writes a line on stderr and aborts the runtime (a trap), `memory` allocates
until the memory limit refuses it (Python's MemoryError)."""

import os
import sys

from ward_sdk import Context, InvalidInput, WitWorld, action  # noqa: F401


@action
def chaos(ctx: Context, input: dict) -> dict:
    mode = (input or {}).get("mode")
    if mode == "recurse":
        print("about to recurse without end", file=sys.stderr)
        sys.setrecursionlimit(10**7)

        def down(n: int) -> int:
            return down(n + 1) + 1

        return {"depth": down(0)}
    if mode == "abort":
        print("the runtime gives up here", file=sys.stderr)
        sys.stderr.flush()
        os.abort()
    if mode == "memory":
        blocks = []
        while True:
            blocks.append(bytearray(8 << 20))
    raise InvalidInput(f"unknown mode {mode!r}")
