#!/usr/bin/env python3
"""Aborting clients for the soak (fault F11 inside F21): for DURATION seconds, CONCURRENCY loops each
open a connection to the proxy, start a large download (/stream) or a large upload (/echo with a 64 MiB
Content-Length), move some bytes, and drop the connection mid-way. Prints one JSON line with the counts.

    abort_client.py HOST PORT DURATION CONCURRENCY
"""

import asyncio
import json
import sys
import time


async def one(host, port, upload, counts):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        counts["connect_errors"] += 1
        return
    try:
        if upload:
            writer.write(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: 67108864\r\n\r\n")
            for _ in range(16):
                writer.write(b"u" * 65536)
                await writer.drain()
            counts["aborted_uploads"] += 1
        else:
            writer.write(b"GET /stream?n=1000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            got = 0
            while got < 512 * 1024:
                data = await asyncio.wait_for(reader.read(65536), 10)
                if not data:
                    break
                got += len(data)
            counts["aborted_downloads"] += 1
    except (OSError, asyncio.TimeoutError):
        counts["errors"] += 1
    finally:
        writer.transport.abort()


async def loop(host, port, until, n, counts):
    i = n
    while time.monotonic() < until:
        await one(host, port, i % 2 == 0, counts)
        i += 1


async def main():
    host, port, duration, concurrency = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    counts = {"aborted_downloads": 0, "aborted_uploads": 0, "errors": 0, "connect_errors": 0}
    until = time.monotonic() + duration
    await asyncio.gather(*(loop(host, port, until, n, counts) for n in range(concurrency)))
    print(json.dumps(counts))


if __name__ == "__main__":
    asyncio.run(main())
