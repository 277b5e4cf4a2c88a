"""The configuration: config.yaml, then PAMGATE_* environment variables, validated in one place.

Any unknown key or bad value stops the start with one line that names it.
"""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import isodate
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from consent_store.store import configured_sqlite_file
from engine.domain import EpisodePolicy, Period, Policy
from mappings.yamlio import Mark, MappingFileError, MarkedDict, MarkedList, load_yaml
from mllp.endpoints import files_named

SHIPPED_MAPPINGS = Path(__file__).resolve().parent.parent / "mappings"


class ConfigError(Exception):
    """One line naming the file, the key and the problem."""


def period(text: str) -> Period:
    """An ISO 8601 duration: its date part (years, months, weeks, days) counts on the calendar, its time
    part (after `T`) is exact, so `P1D` and `PT24H` differ across a daylight-saving change."""
    text = text.strip()
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    date, t, time = body.partition("T")
    months, days, delta = 0, 0, timedelta(0)
    if date != "P" or not t:
        d = isodate.parse_duration(date)
        if isinstance(d, isodate.Duration):
            if d.years != int(d.years) or d.months != int(d.months):
                raise ValueError("years and months must be whole numbers")
            months, d = int(d.years) * 12 + int(d.months), d.tdelta
        days, delta = d.days, d - timedelta(days=d.days)
    if t:
        if not time:
            raise ValueError("nothing after the time designator T")
        delta += isodate.parse_duration("P" + t + time)
    return Period(sign * months, sign * days, sign * delta)


def _duration(v):
    if v is None:
        return v
    try:
        period(str(v))
    except (isodate.ISO8601Error, ValueError) as e:
        raise ValueError(f"not an ISO 8601 duration ({v!r}): {e}") from None
    return str(v)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreConfig(Strict):
    url: str = "sqlite:///var/pamgate.db"
    auto_upgrade: bool = True
    journal_retention: str | None = None     # ISO 8601 duration; None keeps the journal forever
    _v = field_validator("journal_retention")(classmethod(lambda cls, v: _duration(v)))

    @field_validator("url")
    @classmethod
    def _url(cls, v):
        # what create_engine would refuse at start, refused here with the key's name
        try:
            make_url(v).get_dialect()
        except NoSuchModuleError:
            raise ValueError(f"unknown store scheme in {v!r}: expected sqlite:///PATH or "
                             "postgresql+psycopg://…") from None
        except ArgumentError:
            raise ValueError(f"not a store URL ({v!r}): expected sqlite:///PATH or postgresql+psycopg://…") from None
        return v


class MllpListener(Strict):
    endpoint: str
    default_encoding: str = "8859/1"
    force_encoding: str | None = None


class Listeners(Strict):
    mllp: list[MllpListener] = Field(default_factory=lambda: [MllpListener(endpoint="tcp:2575:interface=127.0.0.1")])
    http: str = "tcp:8080:interface=127.0.0.1"


class Limits(Strict):
    max_frame_bytes: int = Field(1_048_576, gt=0)
    idle_timeout: float = Field(300.0, gt=0)
    frame_timeout: float = Field(30.0, gt=0)
    max_connections: int = Field(256, gt=0)
    max_batch: int = Field(512, gt=0)
    max_body_bytes: int = Field(65_536, gt=0)


class SenderRule(Strict):
    """Which mapping a sender gets (mappings/README.md, "Selection"), with policy overrides."""
    application: str | None = None
    facility: str | None = None
    version: str | None = None
    profile: str | None = None
    mapping: str
    policy: dict = Field(default_factory=dict)


class MappingsConfig(Strict):
    paths: list[str] = Field(default_factory=list)   # added after the shipped mappings, so they override
    senders: list[SenderRule] = Field(default_factory=list)


class SequenceSender(Strict):
    """A sender that numbers its messages in MSH-13 (HL7 v2.5 2.10.1, the sequence number protocol): one link
    per sender, named exactly as `MessageWork.sender` names it (MSH-3-1, MSH-4-1; no patterns)."""
    application: str = Field(min_length=1)
    facility: str


class SequenceNumberProtocol(Strict):
    senders: list[SequenceSender] = Field(default_factory=list)

    @field_validator("senders")
    @classmethod
    def _unique(cls, v):
        seen = set()
        for s in v:
            if (s.application, s.facility) in seen:
                raise ValueError(f"sender {s.application}|{s.facility} is listed twice")
            seen.add((s.application, s.facility))
        return v

    def keys(self) -> frozenset:
        """(MSH-3-1, MSH-4-1) of each sender that uses the protocol."""
        return frozenset((s.application, s.facility) for s in self.senders)


class EpisodeConfig(Strict):
    scope: Literal["establishment", "visit"] = "establishment"
    validity: str = "P6M"
    validity_by_uf: dict[str, str] = Field(default_factory=dict)
    validity_by_patient_class: dict[str, str] = Field(default_factory=dict)
    feed_opposition_ends_with_episode: bool = False

    @field_validator("validity")
    @classmethod
    def _v1(cls, v):
        return _duration(v)

    @field_validator("validity_by_uf", "validity_by_patient_class")
    @classmethod
    def _v2(cls, v):
        return {k: _duration(x) for k, x in v.items()}


class DmpConfig(Strict):
    verify_max_age: str = "PT24H"
    _v = field_validator("verify_max_age")(classmethod(lambda cls, v: _duration(v)))


EVENT_TYPES = ("consent.changed", "decision.made", "dmp.access.verify", "dmp.access.authorize",
               "break_glass.used")


class Destination(Strict):
    """One outbound destination: its own queue, retries, backoff, timeout and dead letters."""
    name: str = Field(min_length=1, max_length=100)
    type: Literal["http", "mllp", "file", "amqp"]
    url: str | None = None            # http: the URL each event is POSTed to; amqp: amqp://user:pw@host:5672/vhost
    exchange: str | None = None       # amqp: the topic exchange pamgate declares (durable) and publishes to
    endpoint: str | None = None       # mllp: host:port or a Twisted client endpoint string (tcp:…, tls:…)
    path: str | None = None           # file: JSON lines appended and fsynced
    events: list[str] = Field(default_factory=lambda: ["*"])
    forward_adt: bool = False         # mllp: forward the inbound ADT with its ZFA in the 2.11.1 layout
    timeout: float = Field(10.0, gt=0)
    max_attempts: int = Field(10, gt=0)
    backoff: float = Field(1.0, gt=0)       # seconds before the 2nd attempt, doubled each time after
    max_backoff: float = Field(300.0, gt=0)
    concurrency: int = Field(8, gt=0)       # deliveries in flight at once (each to a different patient)
    poll_interval: float = Field(0.5, gt=0)  # seconds between looks at the outbox when it is idle
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("events")
    @classmethod
    def _events(cls, v):
        for t in v:
            if t != "*" and t not in EVENT_TYPES:
                raise ValueError(f"unknown event type {t!r} (known: *, {', '.join(EVENT_TYPES)})")
        return v

    @model_validator(mode="after")
    def _shape(self):
        need = {"http": "url", "mllp": "endpoint", "file": "path", "amqp": "url"}[self.type]
        if not getattr(self, need):
            raise ValueError(f"{'a' if self.type == 'file' else 'an'} {self.type} destination needs {need}")
        if self.type == "amqp":
            from outbound.amqp import parameters
            parameters(self.url)
            if not self.exchange:
                raise ValueError("an amqp destination needs exchange (the topic exchange to publish to)")
            if self.exchange.startswith("amq.") or len(self.exchange) > 127:
                raise ValueError(f"exchange {self.exchange!r}: names starting with amq. are the broker's, "
                                 f"and a name is at most 127 characters")
        elif self.exchange is not None:
            raise ValueError("exchange is for amqp destinations only")
        if self.type == "http" and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https:// ({self.url!r})")
        if self.type == "mllp" and not self.forward_adt:
            raise ValueError("an mllp destination carries the forwarded ADT (HL7 v2): set forward_adt: true")
        if self.type != "mllp" and self.forward_adt:
            raise ValueError("forward_adt is for mllp destinations only")
        return self

    def takes(self) -> set:
        """The outbox types routed here: the forwarded ADT for mllp, the named events otherwise."""
        return {"adt.forward"} if self.type == "mllp" else set(self.events)


class HabilitationConfig(Strict):
    file: str | None = None           # None: the shipped matrix (the known statements only)
    unknown: Literal["deny", "permit"] = "deny"   # what a cell the matrix does not give decides

    @model_validator(mode="before")
    @classmethod
    def _path(cls, v):
        # `habilitation: FILE`, the form of earlier versions, is the file
        return {"file": v} if isinstance(v, str) or v is None else v


class ApiConfig(Strict):
    token: str | None = None
    # interface.md: with a token, every call but /healthz needs it, /livez and /readyz included; an
    # orchestrator that cannot send a header may open those two
    open_probes: bool = False


class ConsoleUser(Strict):
    name: str = Field(min_length=1, max_length=100)
    password_hash: str = Field(min_length=1)     # argon2, from `pamgate console hash-password`
    role: Literal["viewer", "operator"] = "viewer"
    profession: str = "10"     # G15 code of the user's decisions from the capture screen (10: physician)


class ConsoleConfig(Strict):
    """The web console (console/): its users (none: open on loopback only), the capture screen's option, how
    long a sender may stay quiet before the feed board calls it silent, and how old the audit chain's last
    verification may be before the board warns."""
    users: list[ConsoleUser] = Field(default_factory=list)
    capture_option: int = Field(1, ge=1, le=2)   # the ANS slides' Option 1 (one question) or Option 2 (two boxes)
    silent_after: str = "PT1H"
    audit_verify_every: str = "P7D"
    _v = field_validator("silent_after", "audit_verify_every")(classmethod(lambda cls, v: _duration(v)))


class LogConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, v):
        return v.lower() if isinstance(v, str) else v


class ReplayConfig(Strict):
    lang: Literal["fr", "en"] = "fr"      # the HTML report's language: its auditors (Ségur) read French


class Config(Strict):
    store: StoreConfig = Field(default_factory=StoreConfig)
    listeners: Listeners = Field(default_factory=Listeners)
    limits: Limits = Field(default_factory=Limits)
    mappings: MappingsConfig = Field(default_factory=MappingsConfig)
    sequence_number_protocol: SequenceNumberProtocol = Field(default_factory=SequenceNumberProtocol)
    episode: EpisodeConfig = Field(default_factory=EpisodeConfig)
    reminder_period: str = "P6M"
    habilitation: HabilitationConfig = Field(default_factory=HabilitationConfig)

    def habilitation_file(self) -> str:
        return self.habilitation.file or str(SHIPPED_MAPPINGS / "habilitation.yaml")
    dmp: DmpConfig = Field(default_factory=DmpConfig)
    timezone: str = "Europe/Paris"
    destinations: list[Destination] = Field(default_factory=list)
    api: ApiConfig = Field(default_factory=ApiConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    _v = field_validator("reminder_period")(classmethod(lambda cls, v: _duration(v)))
    # where the configuration came from (None: the defaults), and the sender rules as read, with their lines
    source: str | None = Field(None, exclude=True, init=False)
    _marked_senders = PrivateAttr(None)

    def sender_rules(self):
        """The sender rules for the mapping loader, each with its file and line where a file gave them."""
        if self._marked_senders is not None:
            return self._marked_senders
        return [s.model_dump(exclude_none=True) for s in self.mappings.senders] or None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v):
        try:
            ZoneInfo(v)
        except Exception:  # noqa: BLE001
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    def policy(self, habilitation=None) -> Policy:
        ep = self.episode
        return Policy(
            episode=EpisodePolicy(
                scope=ep.scope, validity=period(ep.validity),
                validity_by_uf={k: period(v) for k, v in ep.validity_by_uf.items()},
                validity_by_patient_class={k: period(v) for k, v in ep.validity_by_patient_class.items()},
                feed_opposition_ends_with_episode=ep.feed_opposition_ends_with_episode),
            habilitation=habilitation,
            habilitation_unknown=self.habilitation.unknown,
            reminder_period=period(self.reminder_period),
            verify_max_age=period(self.dmp.verify_max_age),
            zone=self.timezone,
        )

    def routes(self) -> dict:
        return {d.name: d.takes() for d in self.destinations}

    @field_validator("destinations")
    @classmethod
    def _unique(cls, v):
        names = [d.name for d in v]
        for n in names:
            if names.count(n) > 1:
                raise ValueError(f"two destinations are named {n!r}")
        return v


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite store URL; None for another backend or an in-memory store."""
    file = configured_sqlite_file(url)
    return None if file is None else Path(file)


def _creatable(folder: Path) -> str | None:
    """Why `folder` could not be created (or written to), or None."""
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                return f"{p} is not a folder"
            return None if os.access(p, os.W_OK) else f"{p} is not writable"
    return None


def check_files(cfg: Config) -> tuple[list[str], list[str]]:
    """The files and folders that `serve` will need, checked without starting anything:
    (what was checked, the problems found), each problem one line that names its key."""
    checked, problems = [], []

    def need(key: str, path: str | Path, folder: bool = False) -> None:
        p = Path(path)
        checked.append(f"{key}: {p}")
        if not p.exists():
            problems.append(f"{key}: {p}: no such {'folder' if folder else 'file'}")
        elif folder != p.is_dir():
            problems.append(f"{key}: {p}: is {'not ' if folder else ''}a folder")
        elif not os.access(p, os.R_OK):
            problems.append(f"{key}: {p}: not readable")

    def can_create(key: str, folder: Path) -> None:
        checked.append(f"{key}: {folder}/")
        why = _creatable(folder)
        if why:
            problems.append(f"{key}: cannot create the folder {folder}: {why}")

    endpoints = [(f"listeners.mllp.{i}.endpoint", m.endpoint) for i, m in enumerate(cfg.listeners.mllp)]
    for key, description in endpoints + [("listeners.http", cfg.listeners.http)]:
        for option, path in files_named(description):
            need(f"{key} {option}", path, folder=option == "caCertsDir")
    db = sqlite_path(cfg.store.url)
    if db is not None:
        can_create("store.url", db.parent)
    for i, path in enumerate(cfg.mappings.paths):
        need(f"mappings.paths.{i}", path, folder=Path(path).is_dir())
    if cfg.habilitation.file:
        need("habilitation.file", cfg.habilitation.file)
    for i, d in enumerate(cfg.destinations):
        if d.type == "file":
            can_create(f"destinations.{i}.path", Path(d.path).parent)
    return checked, problems


ENV = {
    "PAMGATE_STORE_URL": ("store", "url"),
    "PAMGATE_HTTP_LISTEN": ("listeners", "http"),
    "PAMGATE_API_TOKEN": ("api", "token"),
    "PAMGATE_LOG_LEVEL": ("log", "level"),
    "PAMGATE_LOG_FORMAT": ("log", "format"),
    "PAMGATE_TIMEZONE": ("timezone",),
}
MLLP_ENV = "PAMGATE_MLLP_LISTEN"


def load(path: str | None = None, environ=None) -> Config:
    """The configuration as `serve` takes it: the file (or the defaults), then the environment.

    Errors are one line that names where the bad value came from: `file:line: key: problem` for the file,
    `PAMGATE_X=value: key: problem` for a variable."""
    environ = os.environ if environ is None else environ
    path = path or environ.get("PAMGATE_CONFIG") or "config.yaml"
    p = Path(path)
    if p.exists():
        try:
            data = load_yaml(p)
        except MappingFileError as e:
            # the same reader as the mapping files: duplicate keys refused, lines kept, UTF-8 checked
            raise ConfigError(f"{e.file}{f':{e.line}' if e.line else ''}: "
                              f"{'' if e.key.startswith('(') else e.key + ': '}{e.problem}") from None
        data = MarkedDict(mark=Mark(path, 1)) if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the configuration must be a mapping of keys")
    elif path != "config.yaml" or environ.get("PAMGATE_CONFIG"):
        raise ConfigError(f"{path}: no such configuration file")
    else:
        data, path = {}, None
    from_env: dict[tuple, str] = {}
    for var, keys in ENV.items():
        if environ.get(var):
            node = data
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = environ[var]
            from_env[keys] = var
    if environ.get(MLLP_ENV):
        eps = [e.strip() for e in environ[MLLP_ENV].split(",") if e.strip()]
        old = {m.get("endpoint"): m for m in (data.get("listeners", {}) or {}).get("mllp", []) or []}
        data.setdefault("listeners", {})["mllp"] = [old.get(e, {"endpoint": e}) for e in eps]
        from_env[("listeners", "mllp")] = MLLP_ENV
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(str(x) for x in err["loc"])
        key = ".".join(loc)
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{_origin(data, loc, path, from_env, environ)}: {key}: {msg}") from None
    if isinstance(data, MarkedDict):
        cfg._marked_senders = (data.get("mappings") or {}).get("senders") or None
    cfg.source = path
    return cfg


def _origin(data, loc: tuple, path: str | None, from_env: dict, environ) -> str:
    """Where the value at `loc` came from: the variable that set it, or the file's line that holds it."""
    for keys, var in from_env.items():
        if loc[:len(keys)] == keys:
            return f"{var}={environ[var]}"
    if path is None:
        return "the defaults"
    node, mark = data, getattr(data, "mark", Mark(path, 0))
    for k in loc:
        if isinstance(node, MarkedDict) and k in node:
            mark, node = node.mark_of(k), node[k]
        elif isinstance(node, MarkedList) and k.isdigit() and int(k) < len(node):
            mark, node = node.mark_of(int(k)), node[int(k)]
        else:
            break
    return str(mark) if mark.line else path
