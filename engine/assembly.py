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


def open_store(cfg) -> Store:
    """The configured store, its folder made (SQLite), migrated when `store.auto_upgrade` says so."""
    url = cfg.store.url
    db = configuration.sqlite_path(url)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StartError(f"store.url: cannot create the folder {db.parent}: {e.strerror or e}") from None
    store = Store(url)
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
