"""The pieces of the mod_md chain for system tests: the installed hook, the gateway, Apache.

* :func:`build_hook_venv` installs this checkout into a virtual environment made
  from Debian's own ``/usr/bin/python3`` (package ``python3-venv``) with
  ``--system-site-packages``, so ``python-dotenv`` and ``dnspython`` come from
  Debian (``python3-dotenv`` ...); only the build backend comes from the
  package index. It lives in
  a fresh ``/tmp/acmegw-hook-venv-*`` that ``www-data`` can read: the machine's
  default Python sits in root's home, which the httpd user cannot enter.
* :func:`start_gateway` runs ``python -m gateway`` over HTTPS with basic auth and the
  ``rfc2136`` provider against a test BIND, checking propagation at that BIND.
* :class:`Apache` writes a complete httpd configuration (its own ServerRoot, pid file,
  error log and MDStoreDir) for ``/usr/sbin/apache2`` from ``apache2-bin`` and runs
  it in the foreground; it starts as root and serves as ``www-data``, so mod_md runs
  the hook as ``www-data``. Everything the hook and mod_md's child need lives in a
  directory ``www-data`` can enter (:func:`shared_directory`), since pytest's
  ``tmp_path`` is closed to other users.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from lib.passwd import PasswordFile
from tests.gateway.procs import GatewayProcess
from tests.servers.bind import BindServer
from tests.servers.certs import make_tls_files
from tests.system import Server, free_port, need_program, unavailable, wait_for_port

REPO = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = "/usr/bin/python3"
MODULES = Path("/usr/lib/apache2/modules")
HTTPD_USER = "www-data"
GATEWAY_USER = "webserver"
GATEWAY_PASSWORD = "web server password: with a colon & spaces"
CHALLENGE = "_acme-challenge.example.test"
# What the hook installation needs from Debian, for the skip message.
VENV_PACKAGES = "python3-venv python3-dotenv python3-dnspython"


def httpd_ids() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(HTTPD_USER)
    except KeyError:
        unavailable(f"no user {HTTPD_USER} (Debian package base-passwd)")
        raise AssertionError("unreachable") from None
    return entry.pw_uid, entry.pw_gid


@contextlib.contextmanager
def shared_directory(prefix: str) -> Iterator[Path]:
    """A fresh directory under /tmp that every user may enter (and read), removed after."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def give_to_httpd(path: Path, mode: int) -> None:
    uid, gid = httpd_ids()
    os.chown(path, uid, gid)
    path.chmod(mode)


# -- the installed hook --------------------------------------------------------------


def build_hook_venv(directory: Path) -> Path:
    """Install this checkout into a venv at *directory*/venv; returns ``bin/acmegw-hook``."""
    if not Path(DEBIAN_PYTHON).is_file():
        unavailable(f"{DEBIAN_PYTHON} missing (Debian package python3)")
    probe = subprocess.run([DEBIAN_PYTHON, "-c", "import ensurepip, venv, dotenv"],
                           capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0:
        unavailable(f"Debian's python3 lacks venv or a library ({VENV_PACKAGES}): "
                    f"{probe.stderr.strip().splitlines()[-1:]}")
    source = directory / "src"
    source.mkdir()
    # A copy, so the build leaves nothing (build/, *.egg-info) in the checkout.
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("gateway", "providers", "hooks", "lib"):
        shutil.copytree(REPO / package, source / package, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    venv = directory / "venv"
    steps = [
        [DEBIAN_PYTHON, "-m", "venv", "--system-site-packages", str(venv)],
        # The build backend comes from the package index (pip's build isolation): the
        # project's license metadata needs a newer setuptools than Debian's.
        [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--no-deps",
         "--disable-pip-version-check", str(source)],
    ]
    # pip keeps the machine's index and proxy settings; Python paths of ours stay out.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=300, check=False,
                              cwd=directory, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(step)} failed:\n{done.stdout}{done.stderr}")
    shutil.rmtree(source)
    for path in [directory, *directory.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    hook = venv / "bin" / "acmegw-hook"
    assert hook.is_file(), f"pip installed no {hook}"
    return hook


def write_hook_conf(directory: Path, gateway_url: str, ca_file: Path, *,
                    timeout: str = "60", httpd: bool = True) -> Path:
    """hook.conf with the password in it, as the README sets it up: owned by root, group
    www-data, mode 640 when *httpd* (mod_md runs the hook as www-data); else owned by
    whoever runs the test, mode 600. The log belongs to the hook's user."""
    conf = directory / "hook.conf"
    log = directory / "hook.log"
    conf.write_text(
        "# acmegw-hook settings (README: Use with Apache mod_md)\n"
        f"ACMEGW_URL={gateway_url}\n"
        f"ACMEGW_USER={GATEWAY_USER}\n"
        f"ACMEGW_PASSWORD='{GATEWAY_PASSWORD}'\n"
        f"ACMEGW_CA_FILE={ca_file}\n"
        f"ACMEGW_TIMEOUT={timeout}\n"
        f"ACMEGW_LOG={log}\n"
    )
    conf.chmod(0o600)
    log.touch(mode=0o600)
    if httpd:
        os.chown(conf, 0, httpd_ids()[1])
        conf.chmod(0o640)
        give_to_httpd(log, 0o600)
    return conf


# -- the gateway -------------------------------------------------------------------


@dataclass
class GatewayFiles:
    directory: Path
    port: int
    ca_file: Path  # readable by www-data
    settings: dict[str, str]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/"

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"


def gateway_files(directory: Path, shared: Path, bind: BindServer) -> GatewayFiles:
    """Configuration for a gateway in *directory*; its CA certificate goes to *shared*."""
    directory.mkdir(parents=True, exist_ok=True)
    tls = make_tls_files(directory / "tls", ca_name="gateway test CA")
    ca_file = shared / "gateway-ca.pem"
    shutil.copy(tls.ca, ca_file)
    ca_file.chmod(0o644)
    passwd = directory / "acmepasswd"
    PasswordFile(passwd).set_user(GATEWAY_USER, GATEWAY_PASSWORD, domains=["example.test"])
    port = free_port()
    settings = {
        "LISTEN": f"127.0.0.1:{port}",
        "SSL_CERT": str(tls.cert),
        "SSL_KEY": str(tls.key),
        "DNSAPI_DOMAINS": "example.test, example.org",
        "BASIC_AUTH": "required",
        "PASSWD_FILE": str(passwd),
        "STATE_DIR": str(directory / "state"),
        **bind.rfc2136_settings(),
        "PROPAGATION_CHECK": "authoritative",
        "PROPAGATION_NAMESERVERS": bind.address,
        "PROPAGATION_TIMEOUT": "20",
        "LOG_LEVEL": "INFO",
    }
    return GatewayFiles(directory, port, ca_file, settings)


def start_gateway(files: GatewayFiles) -> GatewayProcess:
    gateway = GatewayProcess(files.directory, files.settings)
    try:
        gateway.wait_ready()
    except BaseException:
        gateway.stop()
        raise
    return gateway


# -- Apache httpd with mod_md ------------------------------------------------------------


@dataclass
class Apache:
    """One httpd: configuration, process, and what it logged."""

    conf_dir: Path  # root only: config, error log
    shared: Path  # www-data may enter: MDStoreDir, hook.conf, hook.log
    hook: Path
    pebble_url: str
    pebble_ca: Path
    env: Mapping[str, str]
    dns01_version: int = 2
    message_cmd: bool = True
    extra: str = ""
    http_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    server: Server | None = None
    launched: float = 0.0  # time.time() when httpd was started (after `apache2 -t`)

    @property
    def error_log(self) -> Path:
        return self.conf_dir / "error.log"

    @property
    def conf(self) -> Path:
        return self.conf_dir / "httpd.conf"

    def config_text(self) -> str:
        """The configuration the README documents, with test ports and paths."""
        modules = "\n".join(
            f"LoadModule {name}_module {MODULES}/mod_{name}.so"
            for name in ("mpm_event", "authz_core", "ssl", "md")
        )
        message_cmd = f"MDMessageCmd {self.hook}\n" if self.message_cmd else ""
        return f"""\
ServerRoot "{self.conf_dir}"
PidFile "{self.conf_dir}/httpd.pid"
DefaultRuntimeDir "{self.conf_dir}/run"
ErrorLog "{self.error_log}"
LogLevel warn md:debug
{modules}
User {HTTPD_USER}
Group {HTTPD_USER}
ServerName localhost
Listen 127.0.0.1:{self.http_port}
Listen 127.0.0.1:{self.https_port}
StartServers 1
ServerLimit 1
ThreadsPerChild 4
MaxRequestWorkers 4

MDCertificateAuthority {self.pebble_url}
MDCACertificateFile {self.pebble_ca}
MDCertificateAgreement accepted
MDContactEmail admin@example.test
MDCAChallenges dns-01
MDChallengeDns01 {self.hook}
MDChallengeDns01Version {self.dns01_version}
{message_cmd}MDPortMap http:{self.http_port} https:{self.https_port}
MDStoreDir "{self.shared}/md"
MDRenewViaARI off
MDRetryDelay 1s
{self.extra}
MDomain example.test *.example.test

<VirtualHost 127.0.0.1:{self.https_port}>
    ServerName example.test
    ServerAlias *.example.test
    SSLEngine on
</VirtualHost>
"""

    def start(self) -> None:
        apache2 = need_program("apache2", "apache2-bin")
        for module in ("mpm_event", "authz_core", "ssl", "md"):
            if not (MODULES / f"mod_{module}.so").is_file():
                unavailable(f"{MODULES}/mod_{module}.so missing (Debian package apache2-bin)")
        httpd_ids()
        (self.conf_dir / "run").mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.config_text())
        check = subprocess.run([apache2, "-t", "-f", str(self.conf)], capture_output=True,
                               text=True, timeout=30, env=dict(self.env), check=False)
        assert check.returncode == 0, f"apache2 -t: {check.stdout}{check.stderr}"
        self.launched = time.time()
        self.server = Server([apache2, "-f", str(self.conf), "-DFOREGROUND"],
                             self.conf_dir / "apache2.out", env=dict(self.env),
                             cwd=self.conf_dir)
        try:
            wait_for_port(self.https_port, timeout=15, proc=self.server.proc)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=15)
            # A hook mod_md started may still be running (it is bounded by ACMEGW_TIMEOUT);
            # it is in httpd's process group, which we created (start_new_session).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.server.pid, signal.SIGKILL)

    def log(self) -> str:
        text = self.error_log.read_text(errors="replace") if self.error_log.exists() else ""
        if self.server is not None:
            text += self.server.output()
        return text

    def describe(self) -> str:
        hook_log = self.shared / "hook.log"
        hooks = hook_log.read_text(errors="replace") if hook_log.exists() else ""
        return f"--- error.log\n{self.log()[-6000:]}\n--- hook.log\n{hooks[-3000:]}"

    def wait_for_log(self, pattern: str, timeout: float,
                     fail_on: str | None = None) -> re.Match[str]:
        """The first match of *pattern* in the error log; fails at once on *fail_on*."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            match = re.search(pattern, text)
            if match:
                return match
            if fail_on is not None and re.search(fail_on, text):
                raise AssertionError(f"{fail_on!r} in the error log\n" + self.describe())
            if self.server is not None and self.server.proc.poll() is not None:
                raise AssertionError(f"apache2 exited ({self.server.proc.returncode})\n"
                                     + self.describe())
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in the error log after {timeout:g}s\n"
                                     + self.describe())
            time.sleep(0.05)

    def graceful(self) -> None:
        assert self.server is not None
        os.kill(self.server.pid, signal.SIGUSR1)

    def served_certificate(self, server_name: str, roots_pem: str,
                           timeout: float = 20.0) -> x509.Certificate:
        """The certificate the vhost serves for *server_name*, once it verifies against
        *roots_pem* (the fallback certificate mod_md serves before does not)."""
        context = ssl.create_default_context(cadata=roots_pem)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.https_port), timeout=5) as raw, \
                        context.wrap_socket(raw, server_hostname=server_name) as tls:
                    der = tls.getpeercert(binary_form=True)
                    assert der is not None
                    return x509.load_der_x509_certificate(der)
            except (ssl.SSLError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no verifiable certificate for {server_name} "
                                         f"after {timeout:g}s: {exc}\n{self.describe()}") from None
                time.sleep(0.2)


def sans(certificate: x509.Certificate) -> set[str]:
    ext = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return set(ext.value.get_values_for_type(x509.DNSName))


def dig_txt(port: int, name: str = CHALLENGE) -> set[str]:
    """TXT values the DNS server on 127.0.0.1:*port* serves at *name*, as ``dig`` shows them."""
    dig = need_program("dig", "bind9-dnsutils")
    done = subprocess.run([dig, "@127.0.0.1", "-p", str(port), "+norecurse", "+short",
                           "+time=2", "+tries=2", "TXT", name],
                          capture_output=True, text=True, timeout=15, check=False)
    assert done.returncode == 0, f"dig failed: {done.stdout}{done.stderr}"
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    assert not any(line.startswith(";") for line in lines), done.stdout
    return {line.strip('"') for line in lines}


def apache_env(hook_conf: Path) -> dict[str, str]:
    """httpd's environment: mod_md hands it to the hook, which finds hook.conf through it."""
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C",
            "ACMEGW_HOOK_CONF": str(hook_conf)}
