"""contrib/: the systemd unit and the FreeBSD rc.d script.

The unit is checked by systemd itself: ``systemd-analyze verify`` in an
alternate root (holding systemd's own units and a stand-in for the gateway's
executable, so nothing on this machine is touched) must print nothing, and
``systemd-analyze security --offline=true`` must rate its exposure at most 2.0.
The test also reads the unit for the hardening the README promises.

FreeBSD cannot run here, so the rc.d script is run by ``sh`` against a stand-in
for ``/etc/rc.subr`` that records what rc.subr would be asked to do: the
daemon(8) command line, the environment, the user switch and the start-up
checks. That pins the script's logic; that daemon(8) and rc.subr accept it is
only checked on FreeBSD.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.gateway.procs import REPO_ROOT
from tests.system import need_program, systemd_verify

UNIT = REPO_ROOT / "contrib" / "acmegw.service"
RC_SCRIPT = REPO_ROOT / "contrib" / "acmegw.rc"


def unit_settings() -> dict[str, list[str]]:
    """Each ``Section.Key`` with its values, in order (systemd keys may repeat)."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key}", []).append(value)
    return found


@pytest.mark.system
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    done = systemd_verify(tmp_path / "root", {"acmegw.service": UNIT.read_text()},
                          ["/opt/acmegw/bin/acmegw-server"])
    # systemd-analyze exits 0 on unknown keys and bad values: its output counts.
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), done.stdout + done.stderr


@pytest.mark.system
def test_systemd_rates_the_unit_well_hardened() -> None:
    analyze = need_program("systemd-analyze", "systemd")
    done = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SYSTEMD_COLORS": "0"},
    )
    match = re.search(r"Overall exposure level for acmegw\.service: ([\d.]+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0, done.stdout


def test_unit_runs_as_a_dynamic_user_with_only_the_port_53_capability() -> None:
    unit = unit_settings()

    def one(key: str) -> str:
        values = unit[f"Service.{key}"]
        assert len(values) == 1, (key, values)
        return values[0]

    assert one("DynamicUser") == "yes"
    assert one("StateDirectory") == "acmegw"
    assert "STATE_DIR=%S/acmegw" in " ".join(unit["Service.Environment"])
    assert one("ExecStart") == "/opt/acmegw/bin/acmegw-server"
    assert one("ProtectSystem") == "strict"
    assert one("PrivateTmp") == "yes"
    assert one("NoNewPrivileges") == "yes"
    assert one("CapabilityBoundingSet") == "CAP_NET_BIND_SERVICE"
    assert one("AmbientCapabilities") == "CAP_NET_BIND_SERVICE"
    assert one("RestrictAddressFamilies") == "AF_INET AF_INET6 AF_UNIX"
    assert unit["Service.SystemCallFilter"][0] == "@system-service"
    assert "Service.User" not in unit and "Service.PrivateUsers" not in unit
    # Configuration comes in as credentials, so /etc/acmegw can stay root-only.
    loaded = {v.split(":", 1)[0] for v in unit["Service.LoadCredential"]}
    assert loaded == {"dotenv", "acmepasswd"}
    assert "DOTENV=%d/dotenv" in " ".join(unit["Service.Environment"])


RC_SUBR_STANDIN = r"""
# What rc.subr provides, reduced to recording what the script asks of it.
load_rc_config() { [ -n "$RC_CONF" ] && . "$RC_CONF"; }
install() { echo "install $*" >> "$LOG"; }
su() { echo "su $*" >> "$LOG"; }
run_rc_command() {
    {
        echo "arg=$1"
        echo "name=$name"
        echo "rcvar=$rcvar"
        echo "command=$command"
        echo "command_args=$command_args"
        echo "pidfile=$pidfile"
        echo "procname=$procname"
        echo "required_files=$required_files"
        echo "env=$(eval echo \"\$${name}_env\")"
        echo "user=$(eval echo \"\$${name}_user\")"
        echo "start_precmd=$start_precmd"
    } >> "$LOG"
    $start_precmd || echo "precmd failed" >> "$LOG"
}
"""


def run_rc(tmp_path: Path, rc_conf: str) -> list[str]:
    standin = tmp_path / "rc.subr"
    standin.write_text(RC_SUBR_STANDIN)
    script = tmp_path / "acmegw"
    text = RC_SCRIPT.read_text()
    assert text.count(". /etc/rc.subr\n") == 1
    script.write_text(text.replace(". /etc/rc.subr\n", f". {standin}\n"))
    conf = tmp_path / "rc.conf"
    conf.write_text(rc_conf)
    log = tmp_path / "log"
    done = subprocess.run(
        ["sh", str(script), "start"],
        env={"PATH": "/usr/bin:/bin", "RC_CONF": str(conf), "LOG": str(log)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return log.read_text().splitlines()


def test_rc_script_runs_the_gateway_under_daemon_as_its_own_user(tmp_path: Path) -> None:
    lines = run_rc(tmp_path, 'acmegw_enable="YES"\n')
    assert "arg=start" in lines
    assert "name=acmegw" in lines and "rcvar=acmegw_enable" in lines
    assert "command=/usr/sbin/daemon" in lines and "procname=/usr/sbin/daemon" in lines
    args = next(line for line in lines if line.startswith("command_args=")).split("=", 1)[1]
    argv = args.split()
    # daemon: restart after 5 s, log file, supervisor and child pid files, drop to acmegw.
    assert argv[: argv.index("/usr/local/acmegw/bin/acmegw-server")] == [
        "-f", "-R", "5", "-o", "/var/log/acmegw/acmegw.log",
        "-P", "/var/run/acmegw.pid", "-p", "/var/run/acmegw.child.pid", "-u", "acmegw",
    ]  # fmt: skip
    assert argv[-2:] == ["--dotenv", "/usr/local/etc/acmegw/dotenv"]
    assert "pidfile=/var/run/acmegw.pid" in lines
    assert "required_files=/usr/local/etc/acmegw/dotenv" in lines
    env = next(line for line in lines if line.startswith("env=")).split("=", 1)[1].split()
    assert "STATE_DIR=/var/db/acmegw" in env
    # rc.subr must start daemon(8) as root: daemon drops privileges itself.
    assert "user=" in lines
    assert "install -d -o acmegw -g acmegw -m 0700 /var/db/acmegw" in lines
    assert "install -d -o acmegw -g acmegw -m 0750 /var/log/acmegw" in lines
    check = next(line for line in lines if line.startswith("su "))
    assert check.startswith("su -m acmegw -c env STATE_DIR=/var/db/acmegw")
    assert check.split()[-3:] == ["--dotenv", "/usr/local/etc/acmegw/dotenv", "--check-config"]
    assert "precmd failed" not in lines


def test_rc_script_settings_come_from_rc_conf(tmp_path: Path) -> None:
    lines = run_rc(
        tmp_path,
        'acmegw_enable="YES"\nacmegw_user="gw"\nacmegw_group="gw"\n'
        'acmegw_venv="/opt/gw"\nacmegw_dotenv="/etc/gw.env"\nacmegw_state_dir="/var/gw"\n'
        'acmegw_logfile="/var/log/gw.log"\nacmegw_flags="--listen 10.0.0.2:8000"\n'
        'acmegw_env="ALL_PROXY=http://10.0.0.1:3128"\n',
    )
    args = next(line for line in lines if line.startswith("command_args=")).split("=", 1)[1]
    assert "-u gw /opt/gw/bin/acmegw-server --dotenv /etc/gw.env --listen 10.0.0.2:8000" in args
    assert "-o /var/log/gw.log" in args
    env = next(line for line in lines if line.startswith("env=")).split("=", 1)[1].split()
    assert "STATE_DIR=/var/gw" in env and "ALL_PROXY=http://10.0.0.1:3128" in env
    assert "install -d -o gw -g gw -m 0700 /var/gw" in lines
    assert "install -d -o gw -g gw -m 0750 /var/log" in lines
