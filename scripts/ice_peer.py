"""One side of a standard ICE agent (aioice, RFC 8445) for scripts/bench-punch.sh.

Runs inside a lab host's namespace. Gathers host and server-reflexive candidates (STUN server given with
--stun HOST:PORT: the lab's stund), prints them with its ICE credentials as one JSON line on stdout, reads
the other side's line from stdin (the harness hands both lines over in the same instant, like the
rendezvous push), then runs aioice's connect() and prints one JSON line: connected or not and the time
from the moment the other side's candidates arrived to the end of connect() (a nominated pair, i.e.
after a successful connectivity check, RFC 8445 section 8). Every wait is bounded (--timeout).
"""

import argparse
import asyncio
import inspect
import json
import sys
import time

import aioice


async def maybe_await(value):
    # add_remote_candidate is a coroutine in newer aioice releases, a plain call in older ones.
    if inspect.isawaitable(value):
        await value


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--controlling", action="store_true")
    ap.add_argument("--stun", required=True, help="HOST:PORT of the STUN server")
    ap.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args()
    host, port = args.stun.rsplit(":", 1)

    conn = aioice.Connection(
        ice_controlling=args.controlling, stun_server=(host, int(port)), use_ipv6=False
    )
    try:
        await asyncio.wait_for(conn.gather_candidates(), args.timeout)
        mine = {
            "ufrag": conn.local_username,
            "pwd": conn.local_password,
            "candidates": [c.to_sdp() for c in conn.local_candidates],
        }
        print(json.dumps(mine), flush=True)

        line = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline), args.timeout)
        t0 = time.monotonic()
        theirs = json.loads(line)
        conn.remote_username = theirs["ufrag"]
        conn.remote_password = theirs["pwd"]
        for sdp in theirs["candidates"]:
            await maybe_await(conn.add_remote_candidate(aioice.Candidate.from_sdp(sdp)))
        await maybe_await(conn.add_remote_candidate(None))
        try:
            await asyncio.wait_for(conn.connect(), args.timeout)
            ms = (time.monotonic() - t0) * 1000.0
            print(json.dumps({"connected": True, "ms": ms, "candidates": len(mine["candidates"])}), flush=True)
        except (ConnectionError, asyncio.TimeoutError) as e:
            ms = (time.monotonic() - t0) * 1000.0
            print(json.dumps({"connected": False, "ms": ms, "error": str(e) or type(e).__name__}), flush=True)
    finally:
        await conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
