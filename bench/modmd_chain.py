"""Apache start to mod_md's AH10059 ("has been setup"): acmegw-hook chain vs a plain nsupdate hook.

The rig of tests/e2e_hook (real BIND, pebble validating for real, Apache httpd with
mod_md as ``www-data``) obtains a certificate for ``example.test`` and
``*.example.test`` again and again, each time with a fresh MDStoreDir, and measures
the time from starting ``apache2`` to AH10059 in its error log. Two hooks take turns:

* **chain**: ``MDChallengeDns01`` = the installed ``acmegw-hook`` → the gateway
  (``python -m gateway``, HTTPS, basic auth, ``rfc2136`` with its propagation check)
  → BIND;
* **nsupdate**: ``MDChallengeDns01`` = a shell script that pipes one TSIG-signed
  update to ``nsupdate -k <key file>`` → the same BIND (no gateway, no check; with a
  single primary the value is served when nsupdate returns).

Prints each run, the median of each, and the ratio chain/nsupdate. No assertions.
The issue's target: the chain adds at most 30 %.

Most of the time is mod_md's own: generating the account and certificate keys (RSA by
default, which takes a random 0.1-2 s) and talking to the CA. Each hook call costs a
Python start and an HTTPS request (about 0.1 s on a 2-core machine) where nsupdate
costs about 0.02 s; there are four calls per certificate (two setups, two teardowns).
``--keys ec`` takes most key generation out, so that difference weighs more.

Run: ``python bench/modmd_chain.py [--runs 5]``. Needs root and the Debian
packages of the system tests (apache2-bin, bind9, bind9-dnsutils, pebble,
python3-venv, python3-dotenv).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

from tests.e2e_hook.rig import (  # noqa: E402
    Apache,
    apache_env,
    build_hook_venv,
    gateway_files,
    give_to_httpd,
    shared_directory,
    start_gateway,
    write_hook_conf,
)
from tests.servers.bind import BindServer, start_primary  # noqa: E402
from tests.servers.pebble import Pebble, start_pebble  # noqa: E402
from tests.system import need_program  # noqa: E402

SETUP_DONE = r"AH10059: The Managed Domain example\.test has been setup"
TIMEOUT = 60.0

NSUPDATE_HOOK = """#!/bin/sh
# MDChallengeDns01 the plain way: one TSIG-signed update per call, no gateway.
case "$1" in
    setup) op="add _acme-challenge.$2. 60 IN TXT \\"$3\\"" ;;
    teardown) op="delete _acme-challenge.$2. IN TXT \\"$3\\"" ;;
    *) exit 0 ;;
esac
printf 'server 127.0.0.1 {port}\\nzone example.test\\nupdate %s\\nsend\\n' "$op" |
    exec {nsupdate} -k {key_file}
"""


def write_nsupdate_hook(shared: Path, bind: BindServer) -> Path:
    key_file = shared / "tsig.key"
    key_file.write_text(bind.key.statement())
    give_to_httpd(key_file, 0o600)
    hook = shared / "nsupdate-hook"
    hook.write_text(NSUPDATE_HOOK.format(port=bind.port, key_file=key_file,
                                         nsupdate=need_program("nsupdate", "bind9-dnsutils")))
    hook.chmod(0o755)
    return hook


def one_run(work: Path, shared: Path, hook: Path, hook_conf: Path, pebble: Pebble,
            pebble_ca: Path, label: str, n: int, extra: str) -> float:
    conf_dir = work / f"apache-{label}-{n}"
    conf_dir.mkdir()
    store = shared / "md"
    shutil.rmtree(store, ignore_errors=True)
    apache = Apache(conf_dir=conf_dir, shared=shared, hook=hook, pebble_url=pebble.url,
                    pebble_ca=pebble_ca, env=apache_env(hook_conf), message_cmd=False,
                    extra=extra)
    started = time.monotonic()
    apache.start()
    try:
        apache.wait_for_log(SETUP_DONE, TIMEOUT, fail_on="AH10056")
        return time.monotonic() - started
    finally:
        apache.stop()


@contextlib.contextmanager
def rig(work: Path, shared: Path) -> Iterator[tuple[BindServer, Pebble, Path, Path]]:
    """BIND, pebble (CA copied where www-data reads it), a gateway and its hook.conf."""
    bind = start_primary(work / "bind")
    try:
        pebble = start_pebble(work / "pebble", f"127.0.0.1:{bind.port}")
        try:
            pebble_ca = shared / "pebble-ca.pem"
            shutil.copy(pebble.ca_file, pebble_ca)
            pebble_ca.chmod(0o644)
            files = gateway_files(work / "gateway", shared, bind)
            gateway = start_gateway(files)
            try:
                yield bind, pebble, pebble_ca, write_hook_conf(shared, files.url, files.ca_file)
            finally:
                gateway.stop()
        finally:
            pebble.stop()
    finally:
        bind.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each hook (default 5)")
    parser.add_argument("--keys", choices=("rsa", "ec"), default="rsa",
                        help="certificate keys: rsa (mod_md's default, as configured in the "
                        "README) or ec (MDPrivateKeys secp256r1: less time in key generation, "
                        "so the hooks' share shows more)")
    args = parser.parse_args(argv)
    extra = "MDPrivateKeys secp256r1" if args.keys == "ec" else ""
    try:
        with shared_directory("acmegw-hook-venv-") as venv_dir, \
                shared_directory("acmegw-bench-") as shared, \
                tempfile.TemporaryDirectory(prefix="acmegw-bench-") as tmp:
            work = Path(tmp)
            print("installing acmegw-hook for Debian's python3 ...", flush=True)
            acmegw_hook = build_hook_venv(venv_dir)
            with rig(work, shared) as (bind, pebble, pebble_ca, hook_conf):
                hooks = {"chain": acmegw_hook, "nsupdate": write_nsupdate_hook(shared, bind)}
                times: dict[str, list[float]] = {label: [] for label in hooks}
                for n in range(args.runs):
                    # Alternate, so drift on the machine hits both alike.
                    for label in (("chain", "nsupdate") if n % 2 == 0 else ("nsupdate", "chain")):
                        seconds = one_run(work, shared, hooks[label], hook_conf, pebble,
                                          pebble_ca, label, n, extra)
                        times[label].append(seconds)
                        print(f"run {n + 1} {label:8s} {seconds:6.3f} s", flush=True)
    except pytest.skip.Exception as exc:
        print(f"modmd_chain: cannot run: {exc}")
        return 0
    chain, plain = statistics.median(times["chain"]), statistics.median(times["nsupdate"])
    print()
    print(f"Apache start to AH10059, {args.keys.upper()} keys (median of {args.runs} runs; "
          "min-max)")
    for label, key in (("acmegw-hook + gateway + rfc2136", "chain"), ("nsupdate hook", "nsupdate")):
        values = times[key]
        print(f"  {label:33s} {statistics.median(values):6.3f} s   "
              f"({min(values):.3f}-{max(values):.3f})")
    print(f"  ratio chain / nsupdate            {chain / plain:6.3f}  "
          f"(the chain adds {100 * (chain / plain - 1):+.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
