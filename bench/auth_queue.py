"""Password checks under a flood from many addresses, with the queue bounded and not.

The gateway runs as in ``bench/gateway_load.py`` (HTTPS, ``BASIC_AUTH=required``,
``PROVIDER=builtin``), with a second user, an admin whose login is not cached.
600 wrong logins, each from its own address in 127.0.0.0/8 (so every address
stays under ``AUTH_MAX_FAILURES``), are sent at once; half a second into the
flood the admin logs in for the first time. Printed, side by side:

1. ``unbounded``: ``AUTH_QUEUE_SIZE`` and ``AUTH_QUEUE_WAIT`` so large they never
   act, as the queue was before it was bounded: the admin waits behind the flood;
2. ``bounded``: the defaults (64 checks waiting, 5 s): the flood past the queue
   is answered 503 + ``Retry-After`` at once, and the admin is answered (let in,
   or told to retry) within the bound.

Then, with a user still on an original ``$7$`` hash in the file, the time a wrong
password takes for that user and for a user who does not exist (20 of each,
alternating): the second must not be shorter.

Run: ``python bench/auth_queue.py``. Prints figures only.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.rig.gateway import DOMAIN, Rig, machine, make_rig, running  # noqa: E402
from lib.passwd import PasswordFile  # noqa: E402

ADMIN, ADMIN_PASSWORD = "admin", "admin password"
OLD, OLD_PASSWORD = "olduser", "on the original's hash"
FLOOD = 600


def header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def login(rig: Rig, user: str, password: str, source: str = "127.0.0.1") -> tuple[int, float]:
    """One setup on a new TLS connection from *source*: (status, seconds)."""
    body = json.dumps({"argument": "setup", "domain_name": DOMAIN,
                       "challenge_content": "A" * 43}).encode()
    started = time.monotonic()
    conn = http.client.HTTPSConnection("127.0.0.1", rig.port, timeout=120,
                                       context=rig.client_context(), source_address=(source, 0))
    try:
        conn.request("POST", "/", body=body, headers={"Authorization": header(user, password)})
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    except OSError:
        return 0, time.monotonic() - started
    finally:
        conn.close()


def legacy_hash(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha3_512", password.encode(), salt, 262144, 32)
    return "$7${}${}".format(*(base64.b64encode(b).decode().rstrip("=") for b in (salt, digest)))


def flood_round(rig: Rig, env: dict[str, str]) -> str:
    with running(rig, env):
        admin: list[tuple[int, float]] = []

        def admin_login() -> None:
            time.sleep(0.5)
            admin.append(login(rig, ADMIN, ADMIN_PASSWORD, "127.0.0.2"))

        helper = threading.Thread(target=admin_login)
        helper.start()
        sources = [f"127.1.{i // 250}.{1 + i % 250}" for i in range(FLOOD)]
        started = time.monotonic()
        with ThreadPoolExecutor(200) as pool:
            results = list(pool.map(lambda s: login(rig, "bench", f"guess {s}", s), sources))
        flood_time = time.monotonic() - started
        helper.join()
        statuses = Counter(status for status, _ in results)
        status, seconds = admin[0]
        return (f"admin login {status} after {seconds * 1000:.0f} ms; flood of {FLOOD} "
                f"answered in {flood_time:.1f} s: {dict(sorted(statuses.items()))}")


def timing_round(rig: Rig) -> str:
    with running(rig, {"AUTH_CACHE_TTL": "0", "AUTH_MAX_FAILURES": "100000"}):
        login(rig, OLD, "wrong")
        login(rig, "nobody", "wrong")
        known, unknown = [], []
        for _ in range(20):
            known.append(login(rig, OLD, "wrong")[1])
            unknown.append(login(rig, "nobody", "wrong")[1])
        k, u = statistics.median(known) * 1000, statistics.median(unknown) * 1000
        return f"wrong password, median of 20: $7$ user {k:.0f} ms, unknown user {u:.0f} ms"


def main() -> int:
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        rig = make_rig(Path(tmp))
        users = PasswordFile(Path(rig.settings["PASSWD_FILE"]))
        users.set_user(ADMIN, ADMIN_PASSWORD, roles=["admin"])
        with open(rig.settings["PASSWD_FILE"], "a") as f:
            f.write(f"{OLD}:{legacy_hash(OLD_PASSWORD)}\n")
        unbounded = {"AUTH_QUEUE_SIZE": "100000", "AUTH_QUEUE_WAIT": "600s"}
        print(f"unbounded queue: {flood_round(rig, unbounded)}")
        print(f"bounded (64, 5s): {flood_round(rig, {})}")
        print(timing_round(rig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
