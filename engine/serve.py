"""`pamgate serve`: the wiring of the edges around the pipeline, and the reactor's life."""
from __future__ import annotations

import sys
import time

import structlog

from engine import config as configuration
from engine import logs, metrics
from engine.pipeline import Pipeline, now_utc

log = structlog.get_logger("pamgate.serve")


class StartError(Exception):
    """One line for stderr: what stopped the start."""


def open_store(cfg):
    from consent_store.store import Store
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


def _in_memory(url: str) -> bool:
    return url.startswith("sqlite") and (url.rstrip("/") in ("sqlite:", "sqlite+pysqlite:") or ":memory:" in url)


def build_pipeline(cfg) -> Pipeline:
    import mappings
    from mappings import habilitation
    try:
        mapping_set = mappings.load(cfg.mappings.paths, senders=cfg.sender_rules())
        matrix = habilitation.load(cfg.habilitation_file())
    except (mappings.MappingFileError, OSError, ValueError) as e:
        raise StartError(str(e).splitlines()[0]) from None
    return Pipeline(mapping_set, cfg.policy(matrix), tz=cfg.timezone, routes=cfg.routes(),
                    sequenced=cfg.sequence_number_protocol.keys())


def prepared(pipeline, submit):
    """apply(frame, received_at) -> Deferred[Answered]: prepare the message here (parse, mapping, facts),
    then `submit(work)` applies it and fires once the commit that holds it is done."""
    def apply(frame, received_at):
        return submit(pipeline.prepare(frame.text, frame.raw, received_at))
    return apply


def in_process(committer):
    """submit(work) through a GroupCommit (or the replay's inline one) of this process."""
    def submit(work):
        return committer.submit(work.run, work.keys(), work.refused).addCallback(work.answered)
    return submit


def message_handler(apply, on_events=None):
    """The MLLP listener's handler: `apply` the frame (ACK after the commit that holds it), then the ACK.
    `on_events()`: called when the message put events in the outbox (the dispatcher's wake-up)."""
    from engine.commit import StoreUnavailable
    from engine.pipeline import INTERNAL_ERROR, INTERNAL_TEXT
    from mllp.ack import AckError, build_ack

    def handle(frame):
        started = time.perf_counter()

        def ack(answered):
            errors = [AckError(segment=s, sequence=q, field=f, component=c, code=code, severity="E", text=t)
                      for s, q, f, c, code, t in answered.errors]
            if answered.events and on_events is not None:
                on_events()
            metrics.ack_latency.observe(time.perf_counter() - started)
            if answered.conflicting:
                metrics.duplicates_conflicting.inc()
                # what the sender wrote is escaped by the log configuration (logs.neutralise_input on main)
                log.warning("message.duplicate_conflicting", sender=answered.sender, control_id=answered.control_id,
                            hl7_event=answered.event,
                            detail="this MSH-3/4/10 was already applied to a message with other content: "
                                   "answered AA, journaled, not applied")
            if answered.code != "AA":
                # where and which code only: an error's text may quote a field's value
                log.info("message.refused", ack=answered.code, hl7_event=answered.event, sender=answered.sender,
                         errors=[f"{e[0]}{f'-{e[2]}' if e[2] else ''}:{e[4]}" for e in answered.errors])
            log.debug("message.answered", ack=answered.code, msh10=answered.control_id, patient=answered.patient,
                      errors=[e[5] for e in answered.errors])
            return build_ack(frame.text, answered.code, errors, expected_sequence=answered.expected_sequence)

        def internal(failure):
            # a store that cannot commit is the listener's "store unavailable" (207, retry later); anything
            # else is an error of ours, answered once and for all (206): resending would fail the same way
            if failure.check(StoreUnavailable):
                return failure
            log.error("message.internal_error", error=failure.type.__name__)
            err = AckError(segment="", sequence=1, field=0, component=None, code=INTERNAL_ERROR, severity="E",
                           text=INTERNAL_TEXT)
            return build_ack(frame.text, "AE", [err])
        return apply(frame, now_utc()).addCallbacks(ack, internal)
    return handle


def serve(config_path: str | None) -> int:
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from engine.api import Api, site
    from engine.apply_process import ApplyProcess
    from engine.commit import GroupCommit
    from mllp.decoding import codec_for_charset
    from mllp.endpoints import server_endpoint
    from mllp.listener import ListenerSettings, MLLPServerFactory

    cfg = configuration.load(config_path)
    logs.configure(cfg.log.level, cfg.log.format)
    print(f"pamgate: configuration {cfg.source}" if cfg.source else
          "pamgate: no configuration file: running on the defaults", flush=True)
    _, problems = configuration.check_files(cfg)
    if problems:
        raise StartError(problems[0])
    pipeline = build_pipeline(cfg)
    # every endpoint string is parsed before any is opened, so a bad one stops the start with nothing bound
    endpoints = {}
    for key, description in ([(f"listeners.mllp.{i}.endpoint", m.endpoint) for i, m in enumerate(cfg.listeners.mllp)]
                             + [("listeners.http", cfg.listeners.http)]):
        try:
            endpoints[key] = (server_endpoint(reactor, description) if key != "listeners.http"
                              else serverFromString(reactor, description))
        except Exception as e:  # noqa: BLE001 — Twisted's parsers raise many kinds; the one line says why
            raise StartError(f"{key}: {description!r}: not a valid endpoint: {e}") from None
    if _in_memory(cfg.store.url):
        # the apply process and the server would each have a store of their own, and both vanish at exit
        raise StartError(f"store.url: {cfg.store.url}: an in-memory store cannot be served; give a file "
                         f"(sqlite:///var/pamgate.db) or a PostgreSQL URL")
    store = open_store(cfg)
    # the API's operations and the pruning: a thread of this process; inbound messages: the apply process
    committer = GroupCommit(store, reactor, max_batch=cfg.limits.max_batch, on_commit=metrics.on_commit)
    applier = ApplyProcess(reactor, config_path, on_commit=metrics.on_commit)
    applier.start()
    dispatcher = None
    if cfg.destinations:
        from engine.dispatch import Dispatcher
        dispatcher = Dispatcher(store, cfg, reactor)
    wake = dispatcher.wake if dispatcher else None
    handler = message_handler(prepared(pipeline, applier.submit), on_events=wake)

    def journal_rejected(raw, error):
        """A frame the listener answered AR by itself (no MSH, undecodable, too large): into the journal too."""
        work = pipeline.rejected(raw, "", now_utc(), "AR", error)
        applier.submit(work).addErrback(
            lambda f: log.warning("journal.rejected_frame_failed", error=f.type.__name__))
    pruner = None
    if cfg.store.journal_retention:
        from engine.commit import JournalPruner
        pruner = JournalPruner(committer, configuration.period(cfg.store.journal_retention), reactor,
                               zone=cfg.timezone)
    ports, factories, failures = [], [], []

    def listening(kind, description):
        def report(port):
            ports.append(port)
            host = port.getHost()
            print(f"pamgate: {kind} listening on {description} ({host.host}:{host.port})", flush=True)
            return port
        return report

    def failed(description):
        def report(f):
            failures.append(f"{description}: cannot listen: {f.getErrorMessage()}")
        return report

    try:
        for i, listener in enumerate(cfg.listeners.mllp):
            factory = MLLPServerFactory(handler, settings=ListenerSettings(
                name=listener.endpoint, max_frame_bytes=cfg.limits.max_frame_bytes,
                idle_timeout=cfg.limits.idle_timeout, frame_timeout=cfg.limits.frame_timeout,
                max_connections=cfg.limits.max_connections,
                # the configuration names MSH-18 character sets (8859/1); the listener takes codecs
                default_encoding=codec_for_charset(listener.default_encoding) or listener.default_encoding,
                force_encoding=listener.force_encoding and (
                    codec_for_charset(listener.force_encoding) or listener.force_encoding)),
                on_ack=metrics.on_ack, on_rejected=journal_rejected)
            factories.append(factory)
            endpoints[f"listeners.mllp.{i}.endpoint"].listen(factory).addCallbacks(
                listening("mllp", listener.endpoint), failed(listener.endpoint))
        api = Api(pipeline, committer, cfg.api.token, cfg.limits.max_body_bytes,
                  inbound_ready=lambda: applier.ready, on_events=wake)
        http_site = site(api)
        from console.pages import mount
        mount(http_site, api, cfg, listeners=factories)   # the web console under /console/ (issue 14)
        endpoints["listeners.http"].listen(http_site).addCallbacks(
            listening("http", cfg.listeners.http), failed(cfg.listeners.http))
    except (ValueError, TypeError, KeyError) as e:
        raise StartError(f"listener endpoint: {e}") from None

    def check_started():
        if failures:
            print(f"pamgate: {failures[0]}", file=sys.stderr, flush=True)
            reactor.stop()
            return
        log.info("serve.started", listeners=len(ports), store=store.engine.dialect.name)
        if pruner:
            pruner.start()
        if dispatcher:
            dispatcher.start()

    def graceful():
        """Stop accepting, finish and ACK what is in flight, commit, then exit."""
        from twisted.internet.defer import DeferredList, maybeDeferred
        log.info("serve.stopping")
        if pruner:
            pruner.stop()
        stops = [maybeDeferred(p.stopListening) for p in ports]
        drains = [f.drain() for f in factories]
        d = DeferredList(stops + drains, consumeErrors=True)
        if dispatcher:
            d.addBoth(lambda _: dispatcher.stop())
        d.addBoth(lambda _: applier.stop())
        d.addBoth(lambda _: committer.stop())
        return d

    reactor.callWhenRunning(lambda: reactor.callLater(0, check_started))
    reactor.addSystemEventTrigger("before", "shutdown", graceful)
    reactor.run()
    store.dispose()
    return 1 if failures else 0
