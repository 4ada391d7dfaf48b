"""Finding and building the configured provider.

``PROVIDER`` names one of ours by its short name; ``DNSAPI_MODULE`` +
``DNSAPI_CLASS`` (the original gateway's settings) name any class by module, or
by a ``.py`` file path. A class on :class:`providers.base.Provider` is built
from its settings; any other class is treated as an original-gateway provider
and run through :class:`providers.legacy.LegacyProvider`.

Each module of this package that reads settings lists them in a module-level
``SETTINGS`` tuple; :func:`declared_settings` reads those lists from the source,
so a provider that is not selected makes its settings known (not "unknown
setting") without being imported, optional dependencies and all.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import sys
from pathlib import Path

from lib.settings import Settings
from providers.base import Provider, ProviderContext
from providers.legacy import LegacyProvider

# Modules of this package that are not providers.
_NOT_PROVIDERS = frozenset({"base", "registry", "legacy"})
# dns-lexicon reads LEXICON_<PROVIDER>_<OPTION> for each of its many providers itself.
SETTING_PREFIXES = ("LEXICON_",)


def known_providers() -> list[str]:
    """Short names of the providers we ship: ``PROVIDER=<name>`` loads ``providers.<name>``.

    Modules are imported only when chosen, so one provider's imports never slow
    down or break another.
    """
    import providers

    return sorted(
        m.name
        for m in pkgutil.iter_modules(providers.__path__)
        if m.name not in _NOT_PROVIDERS and not m.name.startswith("_")
    )


def declared_settings() -> frozenset[str]:
    """Every key that a module of this package lists in its ``SETTINGS``, read from
    the source (packages included) without importing anything."""
    import providers

    keys: set[str] = set()
    for folder in providers.__path__:
        for path in sorted(Path(folder).rglob("*.py")):
            keys.update(_settings_in(path))
    return frozenset(keys)


def _settings_in(path: Path) -> tuple[str, ...]:
    """The literal ``SETTINGS = (...)`` of the module at *path*, or ()."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "SETTINGS" for t in targets):
            return tuple(ast.literal_eval(value))
    return ()


def _provider_class(module: str, short: str) -> type:
    mod = importlib.import_module(module)
    for value in vars(mod).values():
        if isinstance(value, type) and issubclass(value, Provider) and value.name == short:
            return value
    raise AttributeError(f"{module} has no Provider subclass named {short!r}")


def _import_module(name: str, search: Path | None) -> object:
    """Import *name* as a module name or a ``.py`` path.

    A user coming from the original gateway may keep ``providers/mine.py`` next
    to their dotenv file; ``providers`` is our package, so such a module is
    loaded from that folder by path when we do not ship it.
    """
    if name.endswith(".py") or "/" in name:
        path = Path(name)
        if not path.is_absolute() and search is not None:
            path = search / path
        return _load_file(path, f"acmegw_user_{path.stem}")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if search is None or exc.name is None or not name.startswith(exc.name):
            raise
        candidate = search.joinpath(*name.split(".")).with_suffix(".py")
        if candidate.is_file():
            return _load_file(candidate, f"acmegw_user_{name.replace('.', '_')}")
        raise


def _load_file(path: Path, module_name: str) -> object:
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_class(module: str, class_name: str, search: Path | None = None) -> type:
    """The class *class_name* from *module*; raises ImportError/AttributeError."""
    mod = _import_module(module, search)
    klass = getattr(mod, class_name)
    if not isinstance(klass, type):
        raise TypeError(f"{module}.{class_name} is not a class")
    return klass


def describe(settings: Settings) -> str:
    """A human name for the configured provider (for logs and errors)."""
    short = settings.get("PROVIDER")
    if short:
        return short
    return f"{settings.get('DNSAPI_MODULE')}.{settings.get('DNSAPI_CLASS')}"


def create_provider(settings: Settings, context: ProviderContext) -> Provider | None:
    """Build the configured provider, or record why not in *settings* and return None."""
    short = settings.get("PROVIDER")
    module = settings.get("DNSAPI_MODULE")
    class_name = settings.get("DNSAPI_CLASS")
    if short and (module or class_name):
        settings.problem("set either PROVIDER or DNSAPI_MODULE + DNSAPI_CLASS, not both")
        return None
    if short:
        short = short.lower()
        if short not in known_providers():
            names = ", ".join(known_providers())
            settings.problem(f"PROVIDER={short!r} is unknown (known: {names})")
            return None
        try:
            klass = _provider_class(f"providers.{short}", short)
        except Exception as exc:  # an import failure is a configuration problem
            settings.problem(f"cannot load provider {short}: {type(exc).__name__}: {exc}")
            return None
        return klass.from_settings(settings, context)  # type: ignore[attr-defined,no-any-return]
    if not module or not class_name:
        settings.problem(
            "no provider: set PROVIDER (e.g. PROVIDER=rfc2136) or DNSAPI_MODULE + DNSAPI_CLASS"
        )
        return None
    try:
        klass = load_class(module, class_name, context.config_dir)
    except Exception as exc:  # any import failure is a config problem
        settings.problem(f"cannot load provider {module}.{class_name}: {type(exc).__name__}: {exc}")
        return None
    if issubclass(klass, Provider):
        return klass.from_settings(settings, context)
    return LegacyProvider.wrap(klass, settings, context)
