"""How long acmegw-acme takes to obtain example.test + *.example.test from pebble, and where.

Two ways of publishing, taking turns, against the same pebble (real validation,
``-dnsserver`` at a builtin DNS port):

* **gateway**: the real gateway (``python -m gateway``, HTTPS, basic auth,
  ``PROVIDER=builtin``) on loopback;
* **in-process**: ``--provider builtin`` inside the client.

Each run is ``acmegw-acme issue --force --json``; the JSON steps give the time from
the first step to "Publishing", to the last "Authorization ...: valid", to
"Saved". Prints every run and the medians. No assertions.

Run: ``python bench/acme_issue.py [--runs 5]`` (needs Debian's pebble).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lib.acme.cli import main  # noqa: E402
from lib.passwd import PasswordFile  # noqa: E402
from tests.gateway.procs import running_gateway  # noqa: E402
from tests.servers.certs import make_tls_files  # noqa: E402
from tests.servers.pebble import running_pebble  # noqa: E402
from tests.system import free_port  # noqa: E402

PASSWORD = "bench password"
# Every run validates both names (pebble reuses valid authorizations half the time).
NO_REUSE = {"PEBBLE_AUTHZREUSE": "0"}


def _when(steps: list[dict[str, Any]], prefix: str, last: bool = False) -> float:
    times = [float(s["elapsed"]) for s in steps if str(s["message"]).startswith(prefix)]
    return (times[-1] if last else times[0]) if times else float("nan")


def _issue(argv: list[str]) -> dict[str, float]:
    out = io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        status = main(argv)
    wall = time.monotonic() - start
    doc = json.loads(out.getvalue())
    if status != 0:
        raise SystemExit(f"issue failed: {doc}")
    steps = doc["steps"]
    return {"publish": _when(steps, "Publishing"),
            "validated": _when(steps, "Authorization", last=True),
            "saved": _when(steps, "Saved"), "wall": wall}


def main_bench(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        dns_port, gw_port = free_port(), free_port()
        tls = make_tls_files(folder / "gw-tls", ca_name="acmegw acme test CA")
        PasswordFile(folder / "acmepasswd").set_user("bench", PASSWORD)
        password = folder / "pw"
        password.write_text(PASSWORD)
        password.chmod(0o600)
        settings = {"PROVIDER": "builtin", "BUILTIN_LISTEN": f"127.0.0.1:{dns_port}",
                    "BUILTIN_NS": "ns.example.test", "DNSAPI_DOMAINS": "example.test",
                    "LISTEN": f"127.0.0.1:{gw_port}", "SSL_CERT": str(tls.cert),
                    "SSL_KEY": str(tls.key), "BASIC_AUTH": "required",
                    "PASSWD_FILE": str(folder / "acmepasswd"),
                    "STATE_DIR": str(folder / "gw-state")}
        inproc_port = free_port()
        with running_pebble(folder / "pebble", f"127.0.0.1:{dns_port}", reject_nonces=True,
                            extra_env=NO_REUSE) as pebble, \
                running_gateway(folder, settings):
            common = ["issue", "-d", "example.test", "-d", "*.example.test", "--force",
                      "--json", "--server", pebble.url, "--ca-file", str(pebble.ca_file),
                      "--agree-tos"]
            gateway_argv = [*common, "--state-dir", str(folder / "s1"),
                            "--gateway-url", f"https://127.0.0.1:{gw_port}/",
                            "--gateway-user", "bench", "--gateway-password-file", str(password),
                            "--gateway-ca-file", str(tls.ca)]
            results: dict[str, list[dict[str, float]]] = {"gateway": []}
            for n in range(runs):
                results["gateway"].append(_issue(gateway_argv))
                print(f"gateway    run {n + 1}: {_fmt(results['gateway'][-1])}")
        # pebble asks one DNS server: a second pebble for the in-process builtin's port.
        with running_pebble(folder / "pebble2", f"127.0.0.1:{inproc_port}", reject_nonces=True,
                            extra_env=NO_REUSE) as pebble:
            os.environ["BUILTIN_LISTEN"] = f"127.0.0.1:{inproc_port}"
            os.environ["BUILTIN_NS"] = "ns.example.test"
            argv = ["issue", "-d", "example.test", "-d", "*.example.test", "--force", "--json",
                    "--server", pebble.url, "--ca-file", str(pebble.ca_file), "--agree-tos",
                    "--state-dir", str(folder / "s2"), "--provider", "builtin"]
            results["in-process"] = []
            for n in range(runs):
                results["in-process"].append(_issue(argv))
                print(f"in-process run {n + 1}: {_fmt(results['in-process'][-1])}")
        for way, rows in results.items():
            medians = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            print(f"median {way:10}: {_fmt(medians)}")


def _fmt(row: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}s" for k, v in row.items())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    main_bench(parser.parse_args().runs)
