"""Frames for the floors' minimal scripts (min_echo.py, chunk_floor.py): the
least reading and writing a Python process can do with dspex's framing (a
4-byte big-endian length, then the JSON body). Standard library only."""

import os


def frames(fd):
    """Each frame body read from fd, one read() per burst of input."""
    buf = bytearray()
    read = os.read
    while True:
        if len(buf) >= 4:
            end = 4 + int.from_bytes(buf[:4], "big")
            if len(buf) >= end:
                body = bytes(buf[4:end])
                del buf[:end]
                yield body
                continue
        data = read(fd, 65536)
        if not data:
            return
        buf += data


def write_frame(fd, body):
    """One write() of the header and body."""
    os.write(fd, len(body).to_bytes(4, "big") + body)
