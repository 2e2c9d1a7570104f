#!/usr/bin/env python3
"""The floor of chunk throughput: the least a Python process can do to send
a stream. For each request frame read (args {"n": N, "data": X}) it writes
N chunk frames {"id","type":"chunk","seq","data"} (X encoded per chunk,
one write each, as dspex's worker does), then the final reply
{"id","success":true,"result":{"n":N}}; until EOF. No flow control, no
threads: the same frames through the same pipe, with nothing else.

    python3 -u chunk_floor.py [anything: ignored]
"""

import json
import sys

from floor_frames import frames, write_frame  # beside this script

dumps = json.JSONEncoder(separators=(",", ":")).encode


def main():
    for body in frames(0):
        req = json.loads(body)
        rid = req["id"]
        n = req["args"]["n"]
        data = req["args"]["data"]
        for seq in range(n):
            frame = f'{{"id":{rid},"type":"chunk","seq":{seq},"data":{dumps(data)}}}'.encode()
            write_frame(1, frame)
        reply = dumps({"id": rid, "success": True, "result": {"n": n}}).encode()
        write_frame(1, reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
