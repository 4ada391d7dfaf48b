"""The served certificate's validity: read without ``cryptography``, exported, and logged.

:func:`gateway.tls.certificate_validity` walks the DER structure itself; it is
compared here with ``cryptography``'s reading of the same certificates (EC and
RSA keys, UTCTime and, past 2049, GeneralizedTime). :class:`ReloadingTLS` runs
with a clock the test sets, so the log lines of a certificate in the last fifth
of its lifetime, or expired, are seen without waiting.
"""

from __future__ import annotations

import datetime
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from gateway.config import TLSFiles
from gateway.tls import ReloadingTLS, certificate_validity
from tests.servers.certs import make_tls_files

DAY = 86400.0


def days(n: float) -> datetime.datetime:
    """*n* days from now (negative: ago), to the second."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return now + datetime.timedelta(days=n)


def write_pair(
    folder: Path, start: datetime.datetime, end: datetime.datetime, use_rsa: bool = False
) -> tuple[Path, Path, x509.Certificate]:
    files = make_tls_files(folder, valid=(start, end), rsa_key=use_rsa)
    return files.cert, files.key, x509.load_pem_x509_certificate(files.cert.read_bytes())


@pytest.mark.parametrize("use_rsa", [False, True], ids=["ec", "rsa"])
@pytest.mark.parametrize(
    ("start", "end"),
    [
        (days(-10), days(80)),
        # GeneralizedTime from 2050 on (RFC 5280 4.1.2.5).
        (days(-1), datetime.datetime(2051, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)),
        (datetime.datetime(1999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC), days(1)),
    ],
    ids=["utctime", "generalizedtime", "1999"],
)
def test_validity_read_from_der_matches_cryptography(
    tmp_path: Path, use_rsa: bool, start: datetime.datetime, end: datetime.datetime
) -> None:
    cert_path, _, cert = write_pair(tmp_path, start, end, use_rsa=use_rsa)
    validity = certificate_validity(cert_path.read_text())
    assert validity.not_before == cert.not_valid_before_utc.timestamp()
    assert validity.not_after == cert.not_valid_after_utc.timestamp()


def test_validity_of_a_chain_is_the_first_certificate(tmp_path: Path) -> None:
    leaf, _, cert = write_pair(tmp_path / "leaf", days(-1), days(5))
    other, _, _ = write_pair(tmp_path / "other", days(-100), days(500))
    chain = "text before the chain\n" + leaf.read_text() + other.read_text()
    assert certificate_validity(chain).not_after == cert.not_valid_after_utc.timestamp()


def test_validity_without_a_certificate_is_an_error() -> None:
    with pytest.raises(ValueError, match="no PEM certificate"):
        certificate_validity("-----BEGIN PRIVATE KEY-----\n...")


def test_the_gateway_does_not_import_cryptography_for_it(tmp_path: Path) -> None:
    write_pair(tmp_path, days(-1), days(1))
    code = (
        "import sys; from pathlib import Path; from gateway.config import TLSFiles; "
        "from gateway.tls import ReloadingTLS; "
        f"t = ReloadingTLS(TLSFiles(Path({str(tmp_path / 'cert.pem')!r}), "
        f"Path({str(tmp_path / 'key.pem')!r}))); "
        "print(t.validity.not_after > 0, 'cryptography' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["True", "False"]


class Clock:
    def __init__(self) -> None:
        self.now = datetime.datetime.now(datetime.UTC).timestamp()

    def __call__(self) -> float:
        return self.now


def expiry_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if "TLS certificate" in r.message]
    caplog.clear()
    return lines


def test_expiry_is_logged_in_the_last_fifth_then_daily(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.tls")
    # 100 days of lifetime, 30 left: no word.
    cert, key, _ = write_pair(tmp_path, days(-70), days(30))
    clock = Clock()
    tls = ReloadingTLS(TLSFiles(cert, key), clock=clock)
    tls.check_expiry()
    assert expiry_lines(caplog) == []

    clock.now += 11 * DAY  # 19 days left: under a fifth
    tls.check_expiry()
    ((level, message),) = expiry_lines(caplog)
    assert level == logging.WARNING
    assert f"TLS certificate {cert} expires in 19 days" in message
    assert "renew it" in message

    clock.now += DAY / 2  # said already today
    tls.check_expiry()
    assert expiry_lines(caplog) == []
    clock.now += DAY / 2 + 1
    tls.check_expiry()
    assert [lvl for lvl, _ in expiry_lines(caplog)] == [logging.WARNING]

    clock.now += 20 * DAY  # past notAfter
    tls.check_expiry()
    ((level, message),) = expiry_lines(caplog)
    assert level == logging.ERROR
    assert "expired" in message and "clients refuse the gateway" in message


def test_a_renewed_certificate_ends_the_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.tls")
    cert, key, _ = write_pair(tmp_path, days(-89), days(1))
    clock = Clock()
    tls = ReloadingTLS(TLSFiles(cert, key), clock=clock)
    tls.check_expiry()
    assert [lvl for lvl, _ in expiry_lines(caplog)] == [logging.WARNING]

    _, _, renewed = write_pair(tmp_path, days(0), days(90))
    assert tls.check()
    assert tls.validity.not_after == renewed.not_valid_after_utc.timestamp()
    clock.now += 2 * DAY
    tls.check_expiry()
    assert [m for _, m in expiry_lines(caplog)] == [f"TLS certificate reloaded from {cert}"]
