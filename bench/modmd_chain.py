"""Apache start to mod_md's AH10059 ("has been setup"): acmegw-hook chain vs a plain nsupdate hook.

The rig of tests/e2e_hook (real BIND, pebble validating for real, Apache httpd with
mod_md as ``www-data``) obtains a certificate for ``example.test`` and
``*.example.test`` again and again and measures the time from starting ``apache2``
to AH10059 in its error log. Two hooks take turns:

* **chain**: ``MDChallengeDns01`` = the installed ``acmegw-hook`` → the gateway
  (``python -m gateway``, HTTPS, basic auth, ``rfc2136`` with its propagation check)
  → BIND;
* **nsupdate**: ``MDChallengeDns01`` = a shell script that pipes one TSIG-signed
  update to ``nsupdate -k <key file>`` → the same BIND (no gateway, no check; with a
  single primary the value is served when nsupdate returns).

Two cases, each run for both hooks:

* **new account**: a fresh MDStoreDir every run, as the end-to-end tests do: mod_md
  first makes an ACME account, whose RSA key takes a random 0.1-2 s to generate;
* **existing account**: the MDStoreDir keeps its ``accounts`` (a second managed
  domain, or a renewal): what is left is mostly the four hook calls (two setups, two
  teardowns), the CA and the certificate key, so the hooks weigh most here.

Prints each run, the medians, the ratio chain/nsupdate, and the time mod_md spent
in hook calls per run, taken from its own log (setup: "setup command" to "setup
succeeded"; teardown: "order teardown" to its next line). No assertions. The
issue's target: the chain adds at most 30 %.

Run: ``python bench/modmd_chain.py [--runs 11] [--keys rsa|ec] [--case new|existing]``.
Needs root and the Debian packages of the system tests (apache2-bin, bind9,
bind9-dnsutils, pebble, python3-venv, python3-dotenv).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import re
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


# "[Sun Nov 22 08:11:57.220774 2026] [md:debug] ..." : mod_md's log lines and their times.
LOG_LINE = re.compile(r"^\[\w{3} (\w{3} \d+ [\d:.]+ \d{4})\] (.*)$", re.M)


def timeline(log: str, launched: float) -> tuple[float, float, int]:
    """From mod_md's own log lines (stamped to the microsecond, local time): seconds
    from *launched* (``time.time()``) to AH10059, of those the seconds in hook calls,
    and the number of hook calls."""
    lines = [(datetime.datetime.strptime(stamp, "%b %d %H:%M:%S.%f %Y").timestamp(), text)
             for stamp, text in LOG_LINE.findall(log)]
    in_hooks = 0.0
    calls = 0
    started: float | None = None
    for (when, text), (after, _) in zip(lines, lines[1:] + lines[-1:], strict=True):
        if "AH10059" in text:
            return when - launched, in_hooks, calls
        if "dns-01 setup command:" in text:
            started = when
        elif "dns-01 setup succeeded" in text and started is not None:
            in_hooks += when - started
            calls += 1
            started = None
        elif "order teardown setup dns-01:" in text:
            in_hooks += after - when  # logged just before the call
            calls += 1
    raise RuntimeError("no AH10059 in the log")


def reset_store(store: Path, keep_account: bool) -> None:
    """Remove the certificate state (all of it unless *keep_account*)."""
    if not keep_account:
        shutil.rmtree(store, ignore_errors=True)
        return
    for entry in store.iterdir() if store.exists() else []:
        if entry.name not in ("accounts", "md_store.json"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def start_apache(conf_dir: Path, shared: Path, hook: Path, hook_conf: Path, pebble: Pebble,
                 pebble_ca: Path, extra: str, keep_account: bool) -> Apache:
    """httpd with mod_md calling *hook*, on a store reset for a new certificate.
    ``Apache.start`` checks the configuration with ``apache2 -t`` first; the clock of a
    run starts after that, at ``Apache.launched``."""
    conf_dir.mkdir()
    reset_store(shared / "md", keep_account)
    apache = Apache(conf_dir=conf_dir, shared=shared, hook=hook, pebble_url=pebble.url,
                    pebble_ca=pebble_ca, env=apache_env(hook_conf), message_cmd=False,
                    extra=extra)
    apache.start()
    return apache


def make_account(work: Path, shared: Path, hook: Path, hook_conf: Path, pebble: Pebble,
                 pebble_ca: Path, extra: str) -> None:
    """Obtain one certificate and activate it (a graceful restart): mod_md then files
    the account it made under ``accounts/``, where the next managed domain finds it."""
    apache = start_apache(work / "apache-account", shared, hook, hook_conf, pebble, pebble_ca,
                          extra, keep_account=False)
    try:
        apache.wait_for_log(SETUP_DONE, TIMEOUT, fail_on="AH10056")
        apache.graceful()
        deadline = time.monotonic() + TIMEOUT
        while not any((shared / "md" / "accounts").glob("*/account.json")):
            if time.monotonic() > deadline:
                raise RuntimeError("mod_md filed no account after a graceful restart")
            time.sleep(0.05)
    finally:
        apache.stop()


def one_run(work: Path, shared: Path, hook: Path, hook_conf: Path, pebble: Pebble,
            pebble_ca: Path, label: str, n: int, extra: str,
            keep_account: bool) -> tuple[float, float]:
    """Seconds from starting httpd to AH10059, and of those, seconds in hook calls.

    A run counts only if mod_md called the hook four times (two setups, two
    teardowns): now and then pebble reuses a valid authorization of the account even
    with PEBBLE_AUTHZREUSE=0, and that run is made again.
    """
    for attempt in range(5):
        conf_dir = work / f"apache-{label}-{n}-{'existing' if keep_account else 'new'}-{attempt}"
        elapsed, in_hooks, calls = timed_run(conf_dir, shared, hook, hook_conf, pebble,
                                             pebble_ca, extra, keep_account)
        if calls == 4:
            return elapsed, in_hooks
        print(f"  ({label} run {n + 1}: {calls} hook calls, not 4: made again)", flush=True)
    raise RuntimeError(f"{label} run {n + 1}: never four hook calls in five attempts")


def timed_run(conf_dir: Path, shared: Path, hook: Path, hook_conf: Path, pebble: Pebble,
              pebble_ca: Path, extra: str, keep_account: bool) -> tuple[float, float, int]:
    apache = start_apache(conf_dir, shared, hook, hook_conf, pebble, pebble_ca, extra,
                          keep_account)
    try:
        apache.wait_for_log(SETUP_DONE, TIMEOUT, fail_on="AH10056")
    finally:
        apache.stop()
    log = apache.error_log.read_text(errors="replace")
    if keep_account and "create new account" in log:
        raise RuntimeError(f"{conf_dir.name}: mod_md made a new account; the case is wrong")
    return timeline(log, apache.launched)


@contextlib.contextmanager
def rig(work: Path, shared: Path) -> Iterator[tuple[BindServer, Pebble, Path, Path]]:
    """BIND, pebble (CA copied where www-data reads it), a gateway and its hook.conf."""
    bind = start_primary(work / "bind")
    try:
        # Every order needs its challenges: pebble would otherwise reuse half of the
        # valid authorizations of an existing account, and skip the hooks.
        pebble = start_pebble(work / "pebble", bind.address,
                              extra_env={"PEBBLE_AUTHZREUSE": "0"})
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


def run_case(work: Path, shared: Path, hooks: dict[str, Path], hook_conf: Path,
             pebble: Pebble, pebble_ca: Path, runs: int, extra: str,
             keep_account: bool) -> dict[str, list[tuple[float, float]]]:
    name = "existing account" if keep_account else "new account"
    print(f"\n{name}:", flush=True)
    if keep_account:  # not counted: the account both hooks then use
        make_account(work, shared, hooks["nsupdate"], hook_conf, pebble, pebble_ca, extra)
    results: dict[str, list[tuple[float, float]]] = {label: [] for label in hooks}
    for n in range(runs):
        # Alternate, so drift on the machine hits both alike.
        for label in (("chain", "nsupdate") if n % 2 == 0 else ("nsupdate", "chain")):
            seconds, in_hooks = one_run(work, shared, hooks[label], hook_conf, pebble,
                                        pebble_ca, label, n, extra, keep_account)
            results[label].append((seconds, in_hooks))
            print(f"  run {n + 1:2d} {label:8s} {seconds:6.3f} s  (hook calls {in_hooks:.3f} s)",
                  flush=True)
    return results


def report(case: str, keys: str, runs: int, results: dict[str, list[tuple[float, float]]]) -> None:
    total = {k: statistics.median(t for t, _ in v) for k, v in results.items()}
    hooks = {k: statistics.median(h for _, h in v) for k, v in results.items()}
    print(f"\nApache start to AH10059, {case}, {keys.upper()} keys (median of {runs} runs; "
          "min-max)")
    for label, key in (("acmegw-hook + gateway + rfc2136", "chain"), ("nsupdate hook", "nsupdate")):
        values = [t for t, _ in results[key]]
        print(f"  {label:33s} {total[key]:6.3f} s   ({min(values):.3f}-{max(values):.3f});"
              f"  in hook calls {hooks[key]:.3f} s")
    ratio = total["chain"] / total["nsupdate"]
    print(f"  ratio chain / nsupdate            {ratio:6.3f}  (the chain adds "
          f"{100 * (ratio - 1):+.1f} %; hook calls alone add "
          f"{hooks['chain'] - hooks['nsupdate']:+.3f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11, help="runs of each hook (default 11)")
    parser.add_argument("--keys", choices=("rsa", "ec"), default="rsa",
                        help="certificate keys: rsa (mod_md's default, as configured in the "
                        "README) or ec (MDPrivateKeys secp256r1: less time in key generation, "
                        "so the hooks' share shows more)")
    parser.add_argument("--case", choices=("new", "existing", "both"), default="both",
                        help="new account (a fresh MDStoreDir per run), existing account, or "
                        "both (default)")
    args = parser.parse_args(argv)
    extra = "MDPrivateKeys secp256r1" if args.keys == "ec" else ""
    cases = {"new": [False], "existing": [True], "both": [False, True]}[args.case]
    results: dict[bool, dict[str, list[tuple[float, float]]]] = {}
    try:
        with shared_directory("acmegw-hook-venv-") as venv_dir, \
                shared_directory("acmegw-bench-") as shared, \
                tempfile.TemporaryDirectory(prefix="acmegw-bench-") as tmp:
            work = Path(tmp)
            print("installing acmegw-hook for Debian's python3 ...", flush=True)
            acmegw_hook = build_hook_venv(venv_dir)
            with rig(work, shared) as (bind, pebble, pebble_ca, hook_conf):
                hooks = {"chain": acmegw_hook, "nsupdate": write_nsupdate_hook(shared, bind)}
                for keep_account in cases:
                    results[keep_account] = run_case(work, shared, hooks, hook_conf, pebble,
                                                     pebble_ca, args.runs, extra, keep_account)
    except pytest.skip.Exception as exc:
        print(f"modmd_chain: cannot run: {exc}")
        return 0
    for keep_account, result in results.items():
        report("existing account" if keep_account else "new account", args.keys, args.runs,
               result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
