"""Set-up: the store, the mappings and the pipeline, built from the configuration in one way for every
caller: `pamgate serve`, the apply process, the in-process replay and the commands. Nothing here runs a
reactor or opens a socket."""
from __future__ import annotations

import mappings
from consent_store.store import Store
from engine import config as configuration
from engine.pipeline import Pipeline
from mappings import habilitation
from mllp.decoding import codec_for_charset
from mllp.listener import ListenerSettings


class StartError(Exception):
    """One line for stderr: what stopped the start."""


def open_store(cfg, deferred_sync: bool = False) -> Store:
    """The configured store, its folder made (SQLite), migrated when `store.auto_upgrade` says so;
    `deferred_sync`: see consent_store.durability (the apply process)."""
    url = cfg.store.url
    db = configuration.sqlite_path(url)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StartError(f"store.url: cannot create the folder {db.parent}: {e.strerror or e}") from None
    store = Store(url, deferred_sync=deferred_sync)
    if cfg.store.auto_upgrade:
        try:
            store.upgrade()
        except Exception as e:  # noqa: BLE001 — the one line says why
            raise StartError(f"store {store.engine.url.render_as_string(hide_password=True)}: "
                             f"cannot migrate: {str(e).splitlines()[0]}") from None
    return store


def in_memory(url: str) -> bool:
    return url.startswith("sqlite") and (url.rstrip("/") in ("sqlite:", "sqlite+pysqlite:") or ":memory:" in url)


def build_pipeline(cfg) -> Pipeline:
    """The mappings (shipped, then the configured paths, with the sender rules), the habilitation matrix and
    the policy, tied into one Pipeline."""
    try:
        mapping_set = mappings.load(cfg.mappings.paths, senders=cfg.sender_rules())
        matrix = habilitation.load(cfg.habilitation_file())
    except (mappings.MappingFileError, OSError, ValueError) as e:
        raise StartError(str(e).splitlines()[0]) from None
    return Pipeline(mapping_set, cfg.policy(matrix), tz=cfg.timezone, routes=cfg.routes(),
                    sequenced=cfg.sequence_number_protocol.keys())


def listener_endpoints(cfg) -> list[tuple[str, str]]:
    """(key, endpoint string) of every configured listener, the MLLP ones then the HTTP API."""
    return ([(f"listeners.mllp.{i}.endpoint", m.endpoint) for i, m in enumerate(cfg.listeners.mllp)]
            + [("listeners.http", cfg.listeners.http)])


def parse_endpoint(reactor, key: str, description: str):
    """The server endpoint of one listener (`key` as listener_endpoints names it); a bad string is a
    StartError naming the key."""
    from twisted.internet.endpoints import serverFromString

    from mllp.endpoints import server_endpoint
    try:
        return (server_endpoint(reactor, description) if key != "listeners.http"
                else serverFromString(reactor, description))
    except Exception as e:  # noqa: BLE001 — Twisted's parsers raise many kinds; the one line says why
        raise StartError(f"{key}: {description!r}: not a valid endpoint: {e}") from None


def server_endpoints(reactor, cfg) -> dict:
    """key -> the parsed endpoint of every listener, all parsed before any is opened, so a bad one stops
    the start with nothing bound."""
    return {key: parse_endpoint(reactor, key, description) for key, description in listener_endpoints(cfg)}


def check_configuration(cfg) -> tuple[list[str], list[str]]:
    """What `serve` would refuse in a loaded configuration, found without opening a socket or a store:
    (what was checked, one line per problem). `pamgate config check` and `mappings check` use it."""
    from twisted.internet import reactor

    from outbound.mllp import client_endpoint
    checked, problems = configuration.check_files(cfg)
    checked.append("mappings: " + ", ".join([str(configuration.SHIPPED_MAPPINGS)] + cfg.mappings.paths))
    checked.append(f"habilitation: {cfg.habilitation_file()}")
    try:
        build_pipeline(cfg)
    except StartError as e:
        problems.append(str(e))
    for key, description in listener_endpoints(cfg):
        checked.append(f"{key}: {description}")
        if any(p.startswith(f"{key} ") for p in problems):
            continue   # a file it names is missing: check_files said so, the parser would say it again
        try:
            parse_endpoint(reactor, key, description)
        except StartError as e:
            problems.append(str(e))
    if in_memory(cfg.store.url):
        problems.append(f"store.url: {cfg.store.url}: an in-memory store cannot be served")
    for i, d in enumerate(cfg.destinations):
        checked.append(f"destinations.{i}: {d.name} ({d.type})")
        if d.type == "mllp":
            try:
                client_endpoint(reactor, d.endpoint, d.timeout)
            except Exception as e:  # noqa: BLE001
                problems.append(f"destinations.{i}.endpoint: {str(e).splitlines()[0]}")
    return checked, problems


def document_reference():
    """The DMP's document types and categories, as the habilitation matrix reads them (shipped with the
    mappings): what `document.type` and `document.category` may name."""
    return habilitation.reference()


def listener_settings(cfg, listener) -> ListenerSettings:
    """The settings of one configured MLLP listener (`listeners.mllp[i]`), the limits included."""
    return ListenerSettings(
        name=listener.endpoint, max_frame_bytes=cfg.limits.max_frame_bytes,
        idle_timeout=cfg.limits.idle_timeout, frame_timeout=cfg.limits.frame_timeout,
        max_connections=cfg.limits.max_connections,
        # the configuration names MSH-18 character sets (8859/1); the listener takes codecs
        default_encoding=codec_for_charset(listener.default_encoding) or listener.default_encoding,
        force_encoding=listener.force_encoding and (
            codec_for_charset(listener.force_encoding) or listener.force_encoding))
