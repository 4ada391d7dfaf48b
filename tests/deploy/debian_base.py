"""A Debian base image for the container test, debootstrapped from this machine's own mirror.

The image is built from the Debian mirror that this machine's apt already uses
(read from ``/etc/apt/sources.list`` and ``/etc/apt/sources.list.d/`` when the
test runs, never written down anywhere), with only ``python3``,
``python3-venv`` and ``ca-certificates`` on top of debootstrap's ``minbase``.
Its root file system is kept as a tar file under ``ACMEGW_TEST_CACHE``
(default ``/var/tmp/acmegw-test-cache``), keyed by mirror, suite, architecture
and package list, and imported into podman as ``localhost/acmegw-base:<suite>-<key>``,
so only the first run on a machine pays for debootstrap (about a minute).

``python -m tests.deploy.debian_base`` builds it by hand and prints the image name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("ACMEGW_TEST_CACHE", "/var/tmp/acmegw-test-cache"))
PACKAGES = ("python3", "python3-venv", "ca-certificates")
IMAGE_REPO = "localhost/acmegw-base"
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
DEBOOTSTRAP_TIMEOUT = 900.0


class NoDebianMirror(Exception):
    """This machine's apt sources name no Debian mirror that debootstrap can use."""


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    keyring: str | None


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    fields: dict[str, str] = {}
    key = ""
    for line in [*text.splitlines(), ""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if fields:
                yield fields
            fields, key = {}, ""
        elif line[0] in " \t" and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()


def _one_line_sources(text: str) -> Iterator[AptSource]:
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = line.split()[1:]
        options: dict[str, str] = {}
        if words and words[0].startswith("["):
            opts: list[str] = []
            while words:
                word = words.pop(0)
                opts.append(word.strip("[]"))
                if word.endswith("]"):
                    break
            for opt in opts:
                name, _, value = opt.partition("=")
                options[name] = value
        if len(words) >= 2:
            yield AptSource(words[0], (words[1],), tuple(words[2:]), options.get("signed-by"))


def apt_sources(paths: Iterable[Path] = APT_SOURCES) -> list[AptSource]:
    """Every enabled ``deb`` source in the apt configuration, in apt's reading order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in (".list", ".sources")))
        elif path.is_file():
            files.append(path)
    found: list[AptSource] = []
    for file in files:
        text = file.read_text(errors="replace")
        if file.suffix == ".sources":
            for stanza in _deb822_stanzas(text):
                if "deb" not in stanza.get("types", "").split():
                    continue
                if stanza.get("enabled", "yes").lower() == "no":
                    continue
                keyring = stanza.get("signed-by")
                for uri in stanza.get("uris", "").split():
                    found.append(
                        AptSource(
                            uri,
                            tuple(stanza.get("suites", "").split()),
                            tuple(stanza.get("components", "").split()),
                            keyring if keyring and keyring.startswith("/") else None,
                        )
                    )
        else:
            found.extend(_one_line_sources(text))
    return found


def host_suite() -> str:
    """The running Debian release's code name (``bookworm``, ...)."""
    for line in Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME" and value.strip('"'):
            return value.strip('"')
    raise NoDebianMirror("/etc/os-release names no VERSION_CODENAME: not a Debian release?")


def debian_mirror(suite: str, sources: Sequence[AptSource] | None = None) -> AptSource:
    """The first http(s) source that carries *suite* itself with component ``main``."""
    for source in apt_sources() if sources is None else sources:
        if (
            suite in source.suites
            and "main" in source.components
            and source.uri.startswith(("http://", "https://"))
        ):
            return source
    raise NoDebianMirror(f"no apt source carries Debian {suite} main over http(s)")


@dataclass(frozen=True)
class BaseImage:
    name: str
    built: bool  # False when it came from the cache
    seconds: float


def _podman(podman: str, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [podman, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _debootstrap(
    debootstrap: str, source: AptSource, suite: str, packages: Sequence[str], tarball: Path
) -> None:
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="rootfs-") as tmp:
        rootfs = Path(tmp, "rootfs")
        argv = [
            debootstrap,
            "--variant=minbase",
            f"--include={','.join(packages)}",
            *([f"--keyring={source.keyring}"] if source.keyring else []),
            suite,
            str(rootfs),
            source.uri,
        ]
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT, check=False
        )
        if done.returncode != 0:
            log = Path(rootfs, "debootstrap", "debootstrap.log")
            detail = log.read_text(errors="replace")[-3000:] if log.is_file() else done.stderr
            raise RuntimeError(f"debootstrap failed ({done.returncode}):\n{detail}")
        # apt's downloaded packages would only make the image bigger.
        for cached in Path(rootfs, "var/cache/apt/archives").glob("*.deb"):
            cached.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."],
            check=True,
            timeout=300,
        )
        partial.rename(tarball)


def ensure_base_image(
    podman: str, debootstrap: str, packages: Sequence[str] = PACKAGES
) -> BaseImage:
    """The base image with *packages*, from podman's store, the cached tar file, or debootstrap."""
    started = time.monotonic()
    suite = host_suite()
    source = debian_mirror(suite)
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    key = hashlib.sha256("\n".join([source.uri, suite, arch, *packages]).encode()).hexdigest()[:12]
    name = f"{IMAGE_REPO}:{suite}-{key}"
    folder = CACHE / f"base-{suite}-{key}"
    tarball = folder / "rootfs.tar"
    with cache_lock(CACHE / f"base-{suite}-{key}.lock"):
        if _podman(podman, "image", "exists", name).returncode == 0:
            return BaseImage(name, False, time.monotonic() - started)
        built = not tarball.is_file()
        if built:
            folder.mkdir(parents=True, exist_ok=True)
            _debootstrap(debootstrap, source, suite, packages, tarball)
        with tarball.open("rb") as data:
            imported = subprocess.run(
                [podman, "import", "--change", "CMD=/bin/sh", "-", name],
                stdin=data,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        if imported.returncode != 0:
            raise RuntimeError(f"podman import failed: {imported.stderr.strip()}")
    return BaseImage(name, built, time.monotonic() - started)


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    podman = shutil.which("podman")
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if podman is None or not Path(debootstrap).is_file():
        print("needs podman and debootstrap (Debian packages podman, debootstrap)", file=sys.stderr)
        return 1
    image = ensure_base_image(podman, debootstrap)
    how = "built" if image.built else "from cache"
    print(f"{image.name} ({how}, {image.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
