"""The README's "Which provider for my DNS host" table, made from the installed dns-lexicon.

One row per DNS host: lexicon's providers (the installed version's list, with
the extra packages each one needs), the gateway's own providers for the hosts
they serve, and what serves every other host (``exec`` or delegation to the
builtin server). The table sits in README.md between two marker comments.

    python tools/provider_table.py           # rewrite the table in README.md
    python tools/provider_table.py --check   # exit 1 if it differs from the installed lexicon's
    make provider-table                      # the same as the first

tests/providers/test_provider_table.py runs the check, so the README cannot
drift from the lexicon that ``make test`` installs.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import pkgutil
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
START = "<!-- provider-table:start (tools/provider_table.py writes this table) -->"
END = "<!-- provider-table:end -->"

# lexicon providers the gateway does not offer: "auto" guesses a provider from
# the nameservers and still needs its options, so name the provider instead.
SKIPPED = frozenset({"auto"})
# Hosts whose lexicon docstring does not say "Module provider for <host>".
HOST_NAMES = {
    "azure": "Azure DNS",
    "constellix": "Constellix",
    "ddns": "any RFC 2136 server (BIND, Knot DNS, PowerDNS, Windows DNS, ...)",
    "devnomads": "DevNomads",
    "gandi": "Gandi",
    "googleclouddns": "Google Cloud DNS",
    "gransy": "Gransy (subreg.cz, regtons.com, ...)",
    "infoblox": "Infoblox",
    "internetbs": "Internet.bs",
    "ionos": "IONOS",
    "linode4": "Linode (lexicon's old name linode4)",
    "localzone": "a zone file on the gateway's machine",
    "oci": "Oracle Cloud Infrastructure DNS",
    "plesk": "Plesk",
    "porkbun": "Porkbun",
    "powerdns": "PowerDNS",
    "qcloud": "Tencent Cloud DNSPod (qcloud)",
    "rackspace": "Rackspace",
    "route53": "AWS Route 53",
    "ultradns": "UltraDNS",
    "valuedomain": "Value Domain",
    "wedos": "WEDOS",
    "zeit": "Vercel (lexicon's old name zeit)",
    "zilore": "Zilore",
    "zonomi": "Zonomi, Rimuhosting",
}
# Hosts the gateway serves with a provider of its own: (PROVIDER, how).
NATIVE = {
    "cloudflare": ("cloudflare", "native"),
    "powerdns": ("powerdns", "native (HTTP API), or `rfc2136`"),
    "ddns": ("rfc2136", "native; or `exec` with the nsupdate script below"),
}
# Hosts no lexicon provider covers, and everything else.
OTHERS = [
    ("OpenProvider", "`openprovider`", "native"),
    ("any other DNS host, or one without an API", "`exec` or `builtin`",
     "`exec`: a program of yours, e.g. an acme.sh dnsapi script (see below); `builtin`: "
     "delegate each `_acme-challenge` name to the gateway once (an NS or CNAME record)"),
]


def lexicon_providers() -> dict[str, str]:
    """Each installed lexicon provider's name and the host it serves."""
    from lexicon._private import providers

    hosts = {}
    for module in pkgutil.iter_modules(providers.__path__):
        if module.name == "base" or module.name in SKIPPED:
            continue
        source = Path(providers.__path__[0], f"{module.name}.py").read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(source)) or ""
        said = re.match(r"\s*(?:Module provider|Provider module) for (.+)", doc)
        host = HOST_NAMES.get(module.name) or (said.group(1).strip() if said else module.name)
        hosts[module.name] = host
    return hosts


def extras_needed() -> set[str]:
    """The lexicon providers that need an extra (``pip install 'dns-lexicon[name]'``)."""
    needed = set()
    for requirement in importlib.metadata.requires("dns-lexicon") or []:
        match = re.search(r"""extra\s*==\s*['"]([\w-]+)['"]""", requirement)
        if match and match.group(1) not in ("full", "dev"):
            needed.add(match.group(1))
    return needed


def table() -> str:
    version = importlib.metadata.version("dns-lexicon")
    extras = extras_needed()
    rows = []
    for name, host in lexicon_providers().items():
        how = f"`LEXICON_PROVIDER={name}`"
        if name in extras:
            how += f", with `pip install 'dns-lexicon[{name}]'`"
        if name in NATIVE:
            provider, native = NATIVE[name]
            rows.append((host, f"`{provider}`", f"{native}; or `lexicon` with {how}"))
        else:
            rows.append((host, "`lexicon`", how))
    rows.sort(key=lambda row: row[0].lower())
    lines = [
        f"Generated from dns-lexicon {version} by `make provider-table`.",
        "",
        "| DNS host | `PROVIDER` | how |",
        "| --- | --- | --- |",
        *(f"| {host} | {provider} | {how} |" for host, provider, how in rows + OTHERS),
    ]
    return "\n".join(lines) + "\n"


def replaced(readme: str, new_table: str) -> str:
    """*readme* with the text between the markers replaced by *new_table*."""
    start, end = readme.index(START) + len(START), readme.index(END)
    return readme[:start] + "\n" + new_table + readme[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if README.md's table differs from the installed lexicon's")
    args = parser.parse_args(argv)
    readme = README.read_text(encoding="utf-8")
    wanted = replaced(readme, table())
    if args.check:
        if wanted != readme:
            print("README.md's provider table differs from the installed dns-lexicon's: "
                  "run `make provider-table`", file=sys.stderr)
            return 1
        return 0
    if wanted != readme:
        README.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
