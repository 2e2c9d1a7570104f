#!/usr/bin/env python3
"""The bare loop's minimal Python echo: the least a Python worker can do per
request. Reads a frame (4-byte big-endian length, JSON body), json.loads,
json.dumps of the reply dspex's worker would send for echo, writes the
frame; until EOF. Single-threaded, blocking, standard library only.

    python3 -u min_echo.py [anything: ignored, e.g. --worker-id bare-1]
"""

import json
import sys

from floor_frames import frames, write_frame  # beside this script

dumps = json.JSONEncoder(separators=(",", ":")).encode
loads = json.loads


def main():
    for body in frames(0):
        req = loads(body)
        reply = dumps({"id": req["id"], "success": True,
                       "result": {"payload": req["args"].get("payload")}}).encode()
        write_frame(1, reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
