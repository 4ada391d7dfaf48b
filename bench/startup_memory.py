"""Start-up time and idle memory of the gateway and of its builtin DNS server process.

Starts ``python -m gateway`` several times as in ``bench/gateway_load.py``
(HTTPS, basic auth, ``PROVIDER=builtin`` with its DNS server on a loopback
port) and measures, for each start: the time from launching the process to the
first ``GET /healthz`` answered over TLS (polled every 2 ms on new
connections; the gateway listens only once its DNS server process serves every
record, so this includes starting that process), and the memory of the whole
process tree (the gateway and the DNS server process it starts) once it answers
and again a second later, idle: the resident memory (``Rss``) of each process
and their sum, and the sum of ``Pss`` (pages the two share counted once). Each
run also starts a gateway with ``PROVIDER=memory`` (no DNS server process), for
comparison, and one whose own modules are not byte-compiled; the others find
a byte-compiled copy of the project's modules, as a wheel installed by pip has
them. Then the modules whose import costs the most in
each process (``python -X importtime``).

Run: ``python bench/startup_memory.py [--runs 5]``. Prints figures only.
Targets (README "Performance"): start-up under 1 s, idle RSS under 60 MB.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.rig.gateway import (  # noqa: E402
    ProcessMemory,
    Rig,
    machine,
    make_rig,
    running,
    tree_memory,
)
from tests.gateway.procs import gateway_env  # noqa: E402

# What each process imports before it serves (the DNS server: python -m providers.builtin).
GATEWAY_IMPORTS = "import gateway.server, providers.builtin"
DNS_SERVER_IMPORTS = "import providers.builtin.server"
# The project's own packages: a wheel installed by pip has them byte-compiled, a
# source checkout run with PYTHONDONTWRITEBYTECODE (tests/gateway/procs.py) does not.
PACKAGES = ("gateway", "providers", "lib")
# A gateway without the DNS server process, for comparison (empty: not set).
MEMORY_PROVIDER = {"PROVIDER": "memory", "BUILTIN_LISTEN": "", "BUILTIN_NS": ""}


def import_costs(code: str, env: dict[str, str]) -> list[tuple[int, str]]:
    """Import time by top-level package (self time of its modules, summed), in microseconds."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        # From the folder that holds the code: -c puts the current folder first.
        cwd=env.get("PYTHONPATH", ROOT), env=gateway_env(env),
        capture_output=True, text=True, timeout=60, check=False,
    )
    by_package: dict[str, int] = {}
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[0].split(":")[-1].strip().isdigit():
            continue
        package = parts[2].strip().split(".")[0]
        by_package[package] = by_package.get(package, 0) + int(parts[0].split(":")[-1])
    return sorted(((us, name) for name, us in by_package.items()), reverse=True)


def mib(kib: float) -> str:
    return f"{kib / 1024:5.1f}"


def describe(tree: list[ProcessMemory]) -> str:
    """RSS of each process, their sum, and the PSS sum, in MiB."""
    parts = " + ".join(mib(p.rss).strip() for p in tree)
    total = sum(p.rss for p in tree)
    return f"{parts} = {mib(total).strip()} MiB (PSS {mib(sum(p.pss for p in tree)).strip()})"


@dataclass
class Variant:
    """A way to run the gateway, and what its starts measured."""

    label: str
    settings: dict[str, str]
    startups: list[float] = field(default_factory=list)
    idle: list[list[ProcessMemory]] = field(default_factory=list)

    def start(self, rig: Rig) -> None:
        rig.settings = {k: v for k, v in {**rig.settings, **self.settings}.items() if v}
        with running(rig) as (gw, startup):
            first = tree_memory(gw.pid)
            time.sleep(1)
            idle = tree_memory(gw.pid)
        self.startups.append(startup)
        self.idle.append(idle)
        print(f"  {self.label}: start-up to /healthz {startup * 1000:4.0f} ms; "
              f"RSS at first answer {describe(first)}; 1 s later {describe(idle)}")

    def summary(self) -> None:
        ms = [s * 1000 for s in self.startups]
        totals = [sum(p.rss for p in tree) / 1024 for tree in self.idle]
        pss = [sum(p.pss for p in tree) / 1024 for tree in self.idle]
        print(f"{self.label}: start-up ms min {min(ms):.0f} median {statistics.median(ms):.0f} "
              f"max {max(ms):.0f}; idle RSS of the process tree MiB median "
              f"{statistics.median(totals):.1f} max {max(totals):.1f} "
              f"(PSS median {statistics.median(pss):.1f})")
        if all(len(tree) > 1 for tree in self.idle):
            own = [tree[0].rss / 1024 for tree in self.idle]
            children = [sum(p.rss for p in tree[1:]) / 1024 for tree in self.idle]
            print(f"  of which the gateway process median {statistics.median(own):.1f}, "
                  f"the DNS server process median {statistics.median(children):.1f}")


def compile_project(folder: Path) -> dict[str, str]:
    """A byte-compiled copy of the project's packages in *folder*; the environment that
    runs it. (``PYTHONPYCACHEPREFIX`` would not do: Python then looks for every
    module's cache there, the standard library's too.)"""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, folder / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *PACKAGES],
        cwd=folder, env=gateway_env({}), check=True, timeout=300, stdout=subprocess.DEVNULL,
    )
    return {"PYTHONPATH": str(folder)}


def bench(runs: int) -> int:
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        compiled = compile_project(Path(tmp) / "compiled")
        # Alternating, so that other work on the machine weighs on all alike.
        variants = [
            Variant("PROVIDER=builtin", compiled),
            Variant("PROVIDER=memory", {**compiled, **MEMORY_PROVIDER}),
            Variant("PROVIDER=builtin, no .pyc", {}),
        ]
        for i in range(runs):
            print(f"run {i + 1}:")
            for n, variant in enumerate(variants):
                variant.start(make_rig(Path(tmp) / f"run{i}-{n}"))
        for variant in variants:
            variant.summary()
        for label, code in (
            ("gateway", GATEWAY_IMPORTS),
            ("DNS server process", DNS_SERVER_IMPORTS),
        ):
            report_imports(label, code, compiled)
    return 0


def report_imports(label: str, code: str, env: dict[str, str]) -> None:
    costs = import_costs(code, env)
    total = sum(us for us, _ in costs)
    print(f"import time by package, {label} ({code!r}: {total / 1000:.0f} ms in all):")
    for us, name in costs[:8]:
        print(f"  {us / 1000:6.1f} ms  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        return bench(args.runs)
    except Exception as exc:
        print(f"bench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
