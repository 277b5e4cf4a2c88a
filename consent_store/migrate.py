"""Alembic, driven from code so `pamgate db upgrade` needs no alembic.ini beside the user's config."""
from pathlib import Path

from alembic import command
from alembic.config import Config

HERE = Path(__file__).parent


def config(engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine, revision: str = "head") -> None:
    command.upgrade(config(engine), revision)
