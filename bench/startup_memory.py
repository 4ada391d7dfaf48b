"""Start-up time and idle memory of the gateway process.

Starts ``python -m gateway`` several times as in ``bench/gateway_load.py``
(HTTPS, basic auth, ``PROVIDER=builtin`` with its DNS server on a loopback
port) and measures, for each start: the time from launching the process to the
first ``GET /healthz`` answered over TLS (polled every 2 ms on new
connections), and the resident memory (``VmRSS``) once it answers and again a
second later, idle. Then the modules whose import costs the most
(``python -X importtime -c 'import gateway.server, providers.builtin'``).

Run: ``python bench/startup_memory.py [--runs 5]``. Prints figures only.
Targets (README "Performance"): start-up under 1 s, idle RSS under 60 MB.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.rig.gateway import machine, make_rig, memory_kib, running  # noqa: E402
from tests.gateway.procs import gateway_env  # noqa: E402


def import_costs(top: int) -> list[tuple[int, str]]:
    """Import time by top-level package (self time of its modules, summed), in microseconds."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import gateway.server, providers.builtin"],
        cwd=ROOT, env=gateway_env({}), capture_output=True, text=True, timeout=60, check=False,
    )
    by_package: dict[str, int] = {}
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[0].split(":")[-1].strip().isdigit():
            continue
        package = parts[2].strip().split(".")[0]
        by_package[package] = by_package.get(package, 0) + int(parts[0].split(":")[-1])
    return sorted(((us, name) for name, us in by_package.items()), reverse=True)[:top]


def bench(runs: int) -> int:
    print(f"machine: {machine()}")
    startups: list[float] = []
    rss: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            rig = make_rig(Path(tmp) / f"run{i}")
            with running(rig) as (gw, startup):
                first = memory_kib(gw.pid)["VmRSS"] / 1024
                time.sleep(1)
                idle = memory_kib(gw.pid)["VmRSS"] / 1024
            startups.append(startup)
            rss.append(idle)
            print(f"run {i + 1}: start-up to /healthz {startup * 1000:6.0f} ms, "
                  f"RSS at first answer {first:5.1f} MiB, idle 1 s later {idle:5.1f} MiB")
    print(f"start-up ms: min {min(startups) * 1000:.0f} median "
          f"{statistics.median(startups) * 1000:.0f} max {max(startups) * 1000:.0f}; "
          f"idle RSS MiB: median {statistics.median(rss):.1f} max {max(rss):.1f}")
    total = sum(us for us, _ in import_costs(1000))
    print(f"import time by package ({total / 1000:.0f} ms in all):")
    for us, name in import_costs(8):
        print(f"  {us / 1000:6.1f} ms  {name}")
    return 0


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
