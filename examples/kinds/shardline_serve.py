"""The child's side of a Shardline command kind in `serve` mode, for Python.

`serve(process)` reads shards framed on stdin (a 4-byte big-endian length, then the bytes),
calls `process(shard: bytes) -> bytes` on each, and answers on stdout: a status byte (0 for a
result, 1 for an error whose message follows), a 4-byte big-endian length, then the bytes. An
exception in `process` answers an error and the loop goes on.
"""

import struct
import sys


def serve(process):
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = inp.read(4)
        if len(head) < 4:
            return
        (length,) = struct.unpack(">I", head)
        shard = inp.read(length)
        try:
            status, body = 0, process(shard)
        except Exception as e:  # noqa: BLE001 - every failure is the shard's, not the loop's
            status, body = 1, f"{type(e).__name__}: {e}".encode()
        out.write(struct.pack(">BI", status, len(body)))
        out.write(body)
        out.flush()
