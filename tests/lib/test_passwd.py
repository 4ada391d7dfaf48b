"""Tests for the password file and ``acmegw-passwd``."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import re
import stat
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from passlib.hash import scrypt as passlib_scrypt

from lib import passwd
from lib.passwd import (
    PasswdFileError,
    PasswordFile,
    UserEntry,
    hash_password,
    main,
    make_context,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Any character may be in a password, including the file's field separator.
AWKWARD_PASSWORD = "  s3cr:t pass wörd ✓ "
SALT = bytes(range(16))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def original_scrypt(password: str, salt: bytes = SALT) -> str:
    """A ``$8$`` hash exactly as the original gateway's passwd.py computes it."""
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=16384, r=8, p=1, dklen=32)
    return f"$8${b64(salt)}${b64(digest)}"


def original_pbkdf2(password: str, salt: bytes = SALT) -> str:
    """A ``$7$`` hash exactly as the original gateway's passwd.py computes it."""
    digest = hashlib.pbkdf2_hmac("sha3_512", password.encode("utf-8"), salt, 262144, 32)
    return f"$7${b64(salt)}${b64(digest)}"


# Parses like a real $8$ hash but matches no password; for tests that never verify.
FAKE_HASH = f"$8${b64(b'SALTSALTSALTSALT')}${b64(b'D' * 32)}"


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def pwfile(tmp_path: Path) -> Path:
    return tmp_path / "acmepasswd"


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> Callable[[bytes], None]:
    def feed(data: bytes) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))

    return feed


@pytest.fixture
def prompts(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[str]]:
    """Answer getpass prompts with the given strings; returns the prompts shown."""

    def answer(*replies: str) -> list[str]:
        shown: list[str] = []
        it: Iterator[str] = iter(replies)

        def fake_getpass(prompt: str = "Password: ", stream: object = None) -> str:
            shown.append(prompt)
            return next(it)

        monkeypatch.setattr("getpass.getpass", fake_getpass)
        return shown

    return answer


# --- legacy hashes ------------------------------------------------------------------------


def test_original_scrypt_hash_verifies_and_is_upgraded(pwfile: Path) -> None:
    write(
        pwfile,
        "# managed by hand\n"
        f"alice:{FAKE_HASH}\n"
        "\n"
        f"carol:{original_scrypt(AWKWARD_PASSWORD)}:Example.com.,shop.example.org:admin\n"
        "   # indented comment\n",
        mode=0o644,
    )
    pf = PasswordFile(pwfile)
    users = pf.load()

    assert pf.verify(users, "carol", AWKWARD_PASSWORD.strip()) is None
    entry = pf.verify(users, "carol", AWKWARD_PASSWORD)

    assert entry is not None
    assert entry.hash.startswith("$scrypt$ln=14,r=8,p=1$")
    assert entry.domains == ("example.com", "shop.example.org")
    assert entry.is_admin
    assert pwfile.read_text(encoding="utf-8").splitlines() == [
        "# managed by hand",
        f"alice:{FAKE_HASH}",
        "",
        f"carol:{entry.hash}:example.com,shop.example.org:admin",
        "   # indented comment",
    ]
    assert mode_of(pwfile) == 0o600
    assert sorted(p.name for p in pwfile.parent.iterdir()) == ["acmepasswd"]
    # The upgraded hash is current: a second login verifies and rewrites nothing.
    stamp = pf.stamp()
    assert pf.verify(pf.load(), "carol", AWKWARD_PASSWORD) == entry
    assert pf.stamp() == stamp


def test_original_pbkdf2_sha3_hash_verifies_and_is_upgraded(pwfile: Path) -> None:
    # Each check of this hash costs ~0.3 s: one wrong, one right, nothing more.
    write(pwfile, f"dave:{original_pbkdf2(AWKWARD_PASSWORD)}\n")
    pf = PasswordFile(pwfile)
    users = pf.load()

    assert pf.verify(users, "dave", "wrong") is None
    entry = pf.verify(users, "dave", AWKWARD_PASSWORD)

    assert entry is not None
    assert entry.hash.startswith("$scrypt$")
    assert pwfile.read_text(encoding="utf-8") == f"dave:{entry.hash}\n"


def test_our_dollar7_handler_beats_passlibs_scrypt_dollar7() -> None:
    legacy = f"$7${b64(SALT)}${b64(b'x' * 32)}"
    # passlib's scrypt handler would claim this line as the libsodium "$7$" format...
    assert passlib_scrypt.identify(legacy)
    # ...but the context must read it as the original gateway's PBKDF2-SHA3.
    assert make_context().identify(legacy) == "legacy_pbkdf2_sha3_512"
    assert make_context().identify(original_scrypt("x")) == "legacy_scrypt"


def test_failed_upgrade_still_verifies_and_warns_without_secrets(
    pwfile: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    legacy = original_scrypt(AWKWARD_PASSWORD)
    original = f"carol:{legacy}\n"
    write(pwfile, original)
    pf = PasswordFile(pwfile)
    users = pf.load()
    calls: list[object] = []

    def read_only_replace(src: object, dst: object) -> None:
        calls.append(dst)
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(os, "replace", read_only_replace)
    with caplog.at_level(logging.WARNING, logger="lib.passwd"):
        entry = pf.verify(users, "carol", AWKWARD_PASSWORD)

    assert entry is not None and entry.hash == legacy
    assert pwfile.read_text(encoding="utf-8") == original
    assert sorted(p.name for p in pwfile.parent.iterdir()) == ["acmepasswd"]
    assert "could not upgrade" in caplog.text and "Read-only file system" in caplog.text
    assert AWKWARD_PASSWORD not in caplog.text and b64(SALT) not in caplog.text
    # A read-only deployment must not retry (re-hash, warn) on every login.
    assert pf.verify(users, "carol", AWKWARD_PASSWORD) == entry
    assert len(calls) == 1
    assert pf.verify(users, "carol", "wrong") is None


def test_upgrade_on_read_only_file_still_verifies(
    pwfile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = f"carol:{original_scrypt('pw')}\n"
    write(pwfile, original, mode=0o400)
    if os.geteuid() == 0:
        # root may write anything; answer access() as for the gateway's ordinary user.
        monkeypatch.setattr(os, "access", lambda path, mode: not mode & os.W_OK)
    pf = PasswordFile(pwfile)

    assert pf.verify(pf.load(), "carol", "pw") is not None
    assert pwfile.read_text(encoding="utf-8") == original
    assert mode_of(pwfile) == 0o400
    with pytest.raises(PasswdFileError, match="is read-only"):
        pf.delete_user("carol")


def test_unknown_user_costs_as_much_as_a_known_one(pwfile: Path) -> None:
    pf = PasswordFile(pwfile)
    pf.set_user("alice", "correct horse")
    users = pf.load()
    assert pf.verify(users, "nobody", "correct horse") is None
    assert pf.verify(users, "alice", "wrong") is None  # warm-up of both paths

    known: list[float] = []
    unknown: list[float] = []
    for _ in range(5):
        start = time.perf_counter()
        pf.verify(users, "alice", "wrong")
        known.append(time.perf_counter() - start)
        start = time.perf_counter()
        pf.verify(users, "nobody", "wrong")
        unknown.append(time.perf_counter() - start)

    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 < ratio < 2, (known, unknown)


def test_every_failed_check_costs_one_hash_of_each_kind_in_the_file(
    pwfile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pf = PasswordFile(pwfile)
    pf.set_user("alice", "correct horse")  # scrypt
    with pwfile.open("a") as f:
        f.write(f"dave:{original_pbkdf2('dave pass')}\n")  # the original's $7$: far slower
    users = pf.load()
    checked: list[str] = []
    real_verify = pf._context.verify

    def spy(secret: str, hashed: str) -> bool:
        checked.append(hashed.split("$")[1])  # the scheme
        return bool(real_verify(secret, hashed))

    monkeypatch.setattr(pf._context, "verify", spy)
    monkeypatch.setattr(pf._context, "verify_and_update", lambda secret, hashed: (
        spy(secret, hashed), None))
    # An unknown name (with another user's password, which proves nothing)...
    assert pf.verify(users, "nobody", "dave pass") is None
    assert sorted(checked) == ["7", "scrypt"]
    # ... and a wrong password for a user of either kind cost the same: one of each.
    for name in ("alice", "dave"):
        checked.clear()
        assert pf.verify(users, name, "wrong") is None
        assert sorted(checked) == ["7", "scrypt"], name
    checked.clear()
    assert pf.verify(users, "alice", "correct horse") is not None
    assert checked == ["scrypt"]  # a success costs its own check only: it says so anyway


def test_an_empty_file_still_costs_a_hash(pwfile: Path) -> None:
    write(pwfile, "# nobody yet\n")
    pf = PasswordFile(pwfile)
    assert pf.dummy_hashes(pf.load()) == {}
    assert pf.verify(pf.load(), "nobody", "x") is None


# --- new hashes ---------------------------------------------------------------------------


def test_hash_password_uses_scrypt_at_the_original_cost() -> None:
    hashed = hash_password(AWKWARD_PASSWORD)
    assert hashed.startswith("$scrypt$ln=14,r=8,p=1$")
    assert make_context().verify(AWKWARD_PASSWORD, hashed)


def test_without_hashlib_scrypt_new_hashes_are_pbkdf2_sha512(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(hashlib, "scrypt")
    hashed = hash_password("pw")
    match = re.match(r"^\$pbkdf2-sha512\$(\d+)\$", hashed)
    assert match and int(match.group(1)) >= 210_000


def test_pbkdf2_sha512_is_upgraded_when_scrypt_exists() -> None:
    context = make_context()
    old = context.handler("pbkdf2_sha512").using(rounds=1000).hash("pw")
    ok, new = context.verify_and_update("pw", old)
    assert ok and new.startswith("$scrypt$")


def test_empty_password_is_refused() -> None:
    with pytest.raises(PasswdFileError, match="empty"):
        hash_password("")


def test_user_entry_repr_hides_the_hash() -> None:
    assert FAKE_HASH not in repr(UserEntry("a", FAKE_HASH, (), frozenset()))


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice", "expected user:hash"),
        (f"alice:{FAKE_HASH}:a.com:admin:extra", "expected user:hash"),
        (f":{FAKE_HASH}", "user name"),
        (f"{'a' * 65}:{FAKE_HASH}", "user name"),
        (f"al\x01ce:{FAKE_HASH}", "user name"),
        ("alice:", "unrecognised password hash"),
        ("alice:plain-text-password", "unrecognised password hash"),
        ("alice:$8$c2VjcmV0c2FsdA$c2VjcmV0ZGlnZXN0", "malformed legacy-scrypt"),
        ("alice:$7$c2VjcmV0c2FsdA$!!c2VjcmV0ZGlnZXN0", "malformed legacy-pbkdf2-sha3-512"),
        ("alice:$8$c2VjcmV0c2FsdA", "malformed legacy-scrypt"),
        ("alice:$scrypt$ln=99,r=8,p=1$c2VjcmV0c2FsdA$c2VjcmV0ZGlnZXN0", "malformed scrypt"),
        (f"alice:{FAKE_HASH}:exa mple.com", "invalid domain name"),
        (f"alice:{FAKE_HASH}:a..example.com", "invalid domain name"),
        (f"alice:{FAKE_HASH}:a.com,,b.com", "empty domain"),
        (f"alice:{FAKE_HASH}:*,a.com", "cannot be combined"),
        (f"alice:{FAKE_HASH}::root", "unknown role 'root'"),
    ],
)
def test_malformed_line_names_file_and_line_but_not_the_hash(
    pwfile: Path, line: str, message: str
) -> None:
    write(pwfile, f"# users\nbob:{FAKE_HASH}\n{line}\n")
    with pytest.raises(PasswdFileError) as caught:
        PasswordFile(pwfile).load()
    text = str(caught.value)
    assert text.startswith(f"{pwfile}:3: ")
    assert message in text
    for secret in ("c2VjcmV0", "plain-text-password", FAKE_HASH.split("$")[2]):
        assert secret not in text


def test_duplicate_user_is_an_error(pwfile: Path) -> None:
    write(pwfile, f"bob:{FAKE_HASH}\n\nbob:{FAKE_HASH}:a.com\n")
    with pytest.raises(PasswdFileError, match=r":3: duplicate user 'bob' \(first on line 1\)"):
        PasswordFile(pwfile).load()


def test_invalid_utf8_is_reported_with_line_number(pwfile: Path) -> None:
    pwfile.write_bytes(b"# ok\n\xff\n")
    with pytest.raises(PasswdFileError, match=":2: not valid UTF-8"):
        PasswordFile(pwfile).load()


def test_domains_and_roles_are_normalised(pwfile: Path) -> None:
    write(
        pwfile,
        f"a:{FAKE_HASH}: Example.COM. ,Bücher.Example,example.com\r\n"
        f"b:{FAKE_HASH}:*: ADMIN \n"
        f"c:{FAKE_HASH}:\n"
        f"d:{FAKE_HASH}\n"
        f"e:{FAKE_HASH}:xn--bcher-kva.example:\n",
    )
    users = PasswordFile(pwfile).load()

    assert users["a"].domains == ("example.com", "xn--bcher-kva.example")
    assert users["a"].roles == frozenset() and not users["a"].is_admin
    assert users["b"].domains == () and users["b"].is_admin
    assert users["c"].domains == users["d"].domains == ()
    assert users["e"].domains == ("xn--bcher-kva.example",)
    assert users["d"].hash == FAKE_HASH


def test_missing_file(pwfile: Path) -> None:
    pf = PasswordFile(pwfile)
    assert pf.stamp() is None
    with pytest.raises(PasswdFileError, match="does not exist"):
        pf.load()


# --- changes ------------------------------------------------------------------------------


def test_set_user_creates_updates_and_keeps_what_is_not_given(pwfile: Path) -> None:
    pf = PasswordFile(pwfile)
    assert pf.set_user("alice", "pw one", domains=["Example.com."], roles=["admin"]) == "added"
    assert mode_of(pwfile) == 0o600
    first = pf.load()["alice"]
    stamp = pf.stamp()

    assert pf.set_user("alice", domains=["b.example", "c.example"]) == "updated"
    second = pf.load()["alice"]
    assert second.hash == first.hash and second.is_admin
    assert second.domains == ("b.example", "c.example")
    assert pf.stamp() != stamp

    assert pf.set_user("alice", roles=[], domains=["*"]) == "updated"
    third = pf.load()["alice"]
    assert (third.hash, third.domains, third.roles) == (first.hash, (), frozenset())
    assert pwfile.read_text(encoding="utf-8") == f"alice:{first.hash}\n"
    assert sorted(p.name for p in pwfile.parent.iterdir()) == ["acmepasswd"]


def test_set_user_line_layout_with_roles_but_all_domains(pwfile: Path) -> None:
    write(pwfile, f"root:{FAKE_HASH}\n")
    PasswordFile(pwfile).set_user("root", roles=["admin"])
    assert pwfile.read_text(encoding="utf-8") == f"root:{FAKE_HASH}:*:admin\n"


def test_set_user_rejects_bad_input(pwfile: Path) -> None:
    pf = PasswordFile(pwfile)
    with pytest.raises(PasswdFileError, match="needs a password"):
        pf.set_user("ghost", domains=["a.com"])
    with pytest.raises(PasswdFileError, match="user name"):
        pf.set_user("two words", "pw")
    with pytest.raises(PasswdFileError, match="unknown role"):
        pf.set_user("bob", FAKE_HASH, roles=["superuser"])
    with pytest.raises(PasswdFileError, match="invalid domain"):
        pf.set_user("bob", FAKE_HASH, domains=["*.exa*mple.com"])
    assert not pwfile.exists()


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    pf = PasswordFile(tmp_path / "nowhere" / "acmepasswd")
    with pytest.raises(PasswdFileError, match="no directory"):
        pf.set_user("bob", "pw")


def test_delete_user(pwfile: Path) -> None:
    write(pwfile, f"# keep me\nalice:{FAKE_HASH}\nbob:{FAKE_HASH}:a.com\n", mode=0o640)
    pf = PasswordFile(pwfile)
    pf.delete_user("alice")
    assert pwfile.read_text(encoding="utf-8") == f"# keep me\nbob:{FAKE_HASH}:a.com\n"
    assert mode_of(pwfile) == 0o600
    with pytest.raises(PasswdFileError, match='User "alice" not found'):
        pf.delete_user("alice")


def test_symlinked_file_is_rewritten_behind_the_link(tmp_path: Path) -> None:
    real = write(tmp_path / "real", f"alice:{FAKE_HASH}\n")
    link = tmp_path / "acmepasswd"
    link.symlink_to(real)
    PasswordFile(link).delete_user("alice")
    assert link.is_symlink() and real.read_text(encoding="utf-8") == ""


# --- command line -------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_add_from_stdin_then_verify_and_delete(
    pwfile: Path, stdin: Callable[[bytes], None], capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(AWKWARD_PASSWORD.encode("utf-8") + b"\r\n")
    assert run(capsys, "-f", pwfile, "-i", "alice") == (0, 'User "alice" added\n', "")
    assert mode_of(pwfile) == 0o600
    pf = PasswordFile(pwfile)
    assert pf.verify(pf.load(), "alice", AWKWARD_PASSWORD) is not None

    stdin(AWKWARD_PASSWORD.encode("utf-8") + b"\n")
    assert run(capsys, "-f", pwfile, "--stdin", "--verify", "alice") == (
        0,
        'Password OK for "alice"\n',
        "",
    )
    stdin(AWKWARD_PASSWORD.strip().encode("utf-8") + b"\n")
    assert run(capsys, "-f", pwfile, "-i", "-v", "alice") == (
        1,
        'Password incorrect for "alice"\n',
        "",
    )
    assert run(capsys, "-f", pwfile, "-i", "-v", "bob") == (
        1,
        "",
        'acmegw-passwd: User "bob" not found\n',
    )
    assert run(capsys, "-f", pwfile, "-D", "alice") == (0, 'User "alice" deleted\n', "")
    assert run(capsys, "-f", pwfile, "--delete", "alice") == (
        1,
        "",
        'acmegw-passwd: User "alice" not found\n',
    )


def test_cli_empty_stdin_password_is_refused(
    pwfile: Path, stdin: Callable[[bytes], None], capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(b"\n")
    code, _, err = run(capsys, "-f", pwfile, "-i", "alice")
    assert code == 1 and err == "acmegw-passwd: empty password refused\n"
    assert not pwfile.exists()


def test_cli_generate_prints_a_password_that_verifies(
    pwfile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "-f", pwfile, "-g", "--roles", "admin", "bob")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == 'User "bob" added'
    match = re.fullmatch(r"Password for bob: ([A-Za-z0-9_-]+)", lines[1])
    assert match and len(match.group(1)) >= 43  # 256 bits of base64url
    pf = PasswordFile(pwfile)
    entry = pf.verify(pf.load(), "bob", match.group(1))
    assert entry is not None and entry.is_admin


def test_cli_list_shows_no_hashes(pwfile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(
        pwfile,
        f"# comment\nlegacy:{FAKE_HASH}\n"
        f"web:{FAKE_HASH.replace('$8$', '$7$')}:b.example,a.example\n",
    )
    PasswordFile(pwfile).set_user("root", "pw", roles=["admin"])

    code, out, err = run(capsys, "-f", pwfile, "--list")

    assert (code, err) == (0, "")
    assert "$" not in out
    assert [line.split() for line in out.splitlines()] == [
        ["legacy", "*", "-", "legacy-scrypt"],
        ["web", "b.example,a.example", "-", "legacy-pbkdf2-sha3-512"],
        ["root", "*", "admin", "scrypt"],
    ]


def test_cli_domains_on_existing_user_does_not_prompt(
    pwfile: Path, prompts: Callable[..., list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    write(pwfile, f"web:{FAKE_HASH}\n")
    shown = prompts()
    assert run(capsys, "-f", pwfile, "--domains", "Shop.Example.,b.example", "web") == (
        0,
        'User "web" updated\n',
        "",
    )
    assert shown == []
    assert pwfile.read_text(encoding="utf-8") == f"web:{FAKE_HASH}:shop.example,b.example\n"

    assert run(capsys, "-f", pwfile, "--domains", "*", "web")[0] == 0
    assert pwfile.read_text(encoding="utf-8") == f"web:{FAKE_HASH}\n"
    code, _, err = run(capsys, "-f", pwfile, "--domains", "bad..name", "web")
    assert code == 1 and err.startswith("acmegw-passwd: invalid domain name 'bad..name'")


def test_cli_prompts_twice(
    pwfile: Path, prompts: Callable[..., list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    shown = prompts("pw with: colon", "pw with: colon")
    assert run(capsys, "-f", pwfile, "--domains", "a.example", "new") == (
        0,
        'User "new" added\n',
        "",
    )
    assert len(shown) == 2
    pf = PasswordFile(pwfile)
    entry = pf.verify(pf.load(), "new", "pw with: colon")
    assert entry is not None and entry.domains == ("a.example",)

    prompts("one", "two")
    assert run(capsys, "-f", pwfile, "new") == (
        1,
        "",
        "acmegw-passwd: the passwords do not match\n",
    )
    prompts("")
    assert run(capsys, "-f", pwfile, "new")[2] == "acmegw-passwd: empty password refused\n"


def test_cli_file_defaults_to_env(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stdin: Callable[[bytes], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = tmp_path / "from-env"
    monkeypatch.setenv("PASSWD_FILE", str(target))
    stdin(b"pw\n")
    assert run(capsys, "-i", "alice")[0] == 0
    assert "alice" in PasswordFile(target).load()


def test_cli_malformed_file_error_hides_hash(
    pwfile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(pwfile, "alice:$8$c2VjcmV0c2FsdA$c2VjcmV0\n")
    code, out, err = run(capsys, "-f", pwfile, "--list")
    assert (code, out) == (1, "")
    assert err.startswith(f"acmegw-passwd: {pwfile}:1: ") and "c2VjcmV0" not in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--delete", "--generate", "bob"],
        ["--verify", "--domains", "a.com", "bob"],
        ["--list", "bob"],
        ["--stdin", "--generate", "bob"],
    ],
)
def test_cli_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_runs_as_a_script_from_the_checkout(pwfile: Path) -> None:
    help_run = subprocess.run(
        [sys.executable, "lib/passwd.py", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert help_run.returncode == 0, help_run.stderr
    assert help_run.stdout.startswith("usage: acmegw-passwd")

    add_run = subprocess.run(
        [sys.executable, "lib/passwd.py", "-f", str(pwfile), "-i", "alice"],
        cwd=REPO_ROOT,
        input=b"pw\n",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert add_run.returncode == 0, add_run.stderr
    assert "alice" in PasswordFile(pwfile).load()


def test_module_exports_the_gateway_api() -> None:
    for name in passwd.__all__:
        assert hasattr(passwd, name)
