"""`pamgate serve`: the reactor's life. The listeners, the API, the apply process, the dispatcher and the
pruner are started around the pipeline (built by engine/assembly.py), and stopped in order on shutdown."""
from __future__ import annotations

import os
import sys
from datetime import datetime, timezone

import structlog
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, maybeDeferred

from engine import config as configuration
from engine import logs, metrics
from engine.api import Api, site
from engine.apply_process import ApplyProcess
from engine.assembly import StartError, build_pipeline, in_memory, listener_settings, open_store, server_endpoints
from consent_store.store import Store
from engine.commit import GroupCommit, JournalPruner
from engine.inbound import message_handler, prepared, rejections_journaled
from mllp.listener import MLLPServerFactory
from outbound.dispatcher import Dispatcher

log = structlog.get_logger("pamgate.serve")


def serve(config_path: str | None, mount=None) -> int:
    """Run until stopped. `mount(site, api, cfg, listeners=...)`, given by the composition root (pamgate/), adds
    resources of the layers above the engine (the web console) to the HTTP site."""
    cfg = configuration.load(config_path)
    logs.configure(cfg.log.level, cfg.log.format)
    say = logs.announcer(cfg.log.format)
    say("serve.configuration", f"configuration {cfg.source}" if cfg.source else
        "no configuration file: running on the defaults", file=cfg.source)
    _, problems = configuration.check_files(cfg)
    if problems:
        raise StartError(problems[0])
    pipeline = build_pipeline(cfg)
    # every endpoint string is parsed before any is opened, so a bad one stops the start with nothing bound
    endpoints = server_endpoints(reactor, cfg)
    if in_memory(cfg.store.url):
        # the apply process and the server would each have a store of their own, and both vanish at exit
        raise StartError(f"store.url: {cfg.store.url}: an in-memory store cannot be served; give a file "
                         f"(sqlite:///var/pamgate.db) or a PostgreSQL URL")
    store = open_store(cfg)
    # the API's operations and the pruning: a thread of this process; inbound messages: the apply process.
    # Both commit without waiting for the disk and answer once it has their commit (consent_store/durability.py)
    committed = Store(store.url, deferred_sync=True) if store.path else store
    committer = GroupCommit(committed, reactor, max_batch=cfg.limits.max_batch, on_commit=metrics.on_commit)
    applier = ApplyProcess(reactor, config_path, on_commit=metrics.on_commit)
    applier.start()
    dispatcher = None
    if cfg.destinations:
        dispatcher = Dispatcher(store, cfg, reactor, metrics)
    wake = dispatcher.wake if dispatcher else None
    handler = message_handler(prepared(pipeline, applier.submit), on_events=wake)
    journal_rejected = rejections_journaled(pipeline, applier.submit)
    pruner = None
    if cfg.store.journal_retention:
        pruner = JournalPruner(committer, configuration.period(cfg.store.journal_retention), reactor,
                               zone=cfg.timezone)
    ports, factories, failures = [], [], []
    started_at = datetime.now(timezone.utc)

    def listening(kind, description):
        def report(port):
            ports.append(port)
            host = port.getHost()
            say("serve.listening", f"{kind} listening on {description} ({host.host}:{host.port})", kind=kind,
                endpoint=description, host=host.host, port=host.port)
            return port
        return report

    def failed(description):
        def report(f):
            failures.append(f"{description}: cannot listen: {f.getErrorMessage()}")
        return report

    try:
        for i, listener in enumerate(cfg.listeners.mllp):
            factory = MLLPServerFactory(handler, settings=listener_settings(cfg, listener), on_ack=metrics.on_ack,
                                        on_rejected=journal_rejected)
            factories.append(factory)
            metrics.mllp_connections.labels(listener.endpoint).set_function(lambda f=factory: len(f.connections))
            endpoints[f"listeners.mllp.{i}.endpoint"].listen(factory).addCallbacks(
                listening("mllp", listener.endpoint), failed(listener.endpoint))
        api = Api(pipeline, committer, cfg.api.token, cfg.limits.max_body_bytes,
                  inbound_ready=lambda: applier.ready, on_events=wake, open_probes=cfg.api.open_probes,
                  destinations=[d.name for d in cfg.destinations],
                  about=lambda: about(cfg, store, ports, applier, started_at))
        http_site = site(api, max_connections=cfg.limits.max_connections, idle_timeout=cfg.limits.idle_timeout,
                         request_timeout=cfg.limits.frame_timeout, max_body=cfg.limits.max_body_bytes)
        if mount is not None:
            mount(http_site, api, cfg, listeners=factories)
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
    committed.dispose()
    store.dispose()
    say("serve.stopped", "stopped" + (f" ({failures[0]})" if failures else ""), failed=bool(failures))
    return 1 if failures else 0


def about(cfg, store, ports, applier, started_at) -> dict:
    """What `GET /v1/status` tells of this server: version, configuration, endpoints, store, apply process."""
    return {
        "version": metrics.version(),
        "config": os.path.abspath(cfg.source) if cfg.source else None,
        "started_at": started_at.isoformat(timespec="seconds"),
        "process_id": os.getpid(),
        "endpoints": {"mllp": [m.endpoint for m in cfg.listeners.mllp], "http": cfg.listeners.http,
                      "listening": [f"{p.getHost().host}:{p.getHost().port}" for p in ports]},
        "store": {"dialect": store.engine.dialect.name,
                  "url": store.engine.url.render_as_string(hide_password=True)},
        "apply_process": applier.state(),
    }
