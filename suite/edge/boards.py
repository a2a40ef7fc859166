"""The boards inventory: which edge boards to measure on, how to reach them, how to read power.

    # boards.yaml
    boards:
      - name: pi4
        host: 192.168.1.40
        user: pi
        key_file: ~/.ssh/id_ed25519
        kind: rpi4
        runtime: onnxruntime
        threads: 4
        power: {kind: rd-usb, csv: ~/meter/pi4-session.csv}   # exported by rd-usb on this machine
      - name: nano
        host: 192.168.1.41
        user: jetson
        kind: jetson-nano
        runtime: torch
        power: {kind: tegrastats, interval_ms: 500}

Validated on load like every config: an unknown key, a wrong type or a duplicate name is a
one-line error naming it. Keys and passwords are never read here, only the key file's path,
and never logged. ``power:`` takes ``kind`` (default none) and that kind's own keys: the
fields of its module in ``suite/edge/power_sources/``.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, get_type_hints

from pydantic import (BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, ValidationError, create_model,
                      field_validator, model_validator)

from suite.config import ConfigError, one_line, read_yaml
from suite.edge import power_sources


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


@lru_cache(maxsize=None)
def _kind_model(kinds: tuple[str, ...]) -> type[BaseModel]:
    return create_model("PowerConfig", __config__=ConfigDict(extra="allow"), kind=(Literal[kinds], "none"))


@lru_cache(maxsize=None)
def _fields_model(source: type[power_sources.PowerSource]) -> type[BaseModel]:
    """The strict pydantic twin of a source's dataclass fields (types, defaults, ``metadata`` constraints)."""
    hints = get_type_hints(source)
    fields = {}
    for f in dataclasses.fields(source):
        default = {"default": f.default} if f.default is not dataclasses.MISSING else {"default_factory": f.default_factory}
        fields[f.name] = (hints[f.name], Field(**default, **f.metadata))
    return create_model(f"{source.__name__}Power", __base__=_Strict, kind=(str, source.kind), **fields)


def _power(value) -> power_sources.PowerSource:
    """A board's ``power:`` mapping as its source's instance; errors name ``power.<key>`` like any field's."""
    if isinstance(value, power_sources.PowerSource):
        return value
    kind = _kind_model(tuple(power_sources.kinds())).model_validate(value).kind
    source = power_sources.get(kind)
    checked = _fields_model(source).model_validate(value)
    return source(**checked.model_dump(exclude={"kind"}))  # its check(): a ValueError names power


PowerConfig = Annotated[power_sources.PowerSource, PlainValidator(_power), PlainSerializer(lambda p: p.to_dict())]


class BoardConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    host: str
    port: int = Field(default=22, ge=1, le=65535)
    user: str
    key_file: str | None = None  # private key path; null: the SSH agent / default keys
    kind: Literal["rpi4", "jetson-nano", "generic-linux"] = "generic-linux"
    python: str = "python3"  # interpreter on the board
    runtime: Literal["torch", "onnxruntime"] = "torch"
    threads: int = Field(default=1, ge=1)
    power: PowerConfig = Field(default_factory=lambda: power_sources.get("none")())
    workdir: str = "/tmp/caenet-edge"  # created and removed on the board
    connect_timeout_s: float = Field(default=10, gt=0)  # TCP connect + SSH handshake
    command_timeout_s: float = Field(default=1800, gt=0)  # the whole benchmark command
    known_hosts: str | None = None  # null: ~/.ssh/known_hosts
    accept_unknown_host_key: bool = False  # explicit opt-in; the default rejects unknown hosts

    @field_validator("workdir")
    @classmethod
    def _safe_workdir(cls, v: str) -> str:
        if not v.startswith("/") or v.rstrip("/") in ("", "/tmp", "/home", "/root") or ".." in v:
            raise ValueError("must be an absolute folder of its own (it is removed after the run)")
        return v.rstrip("/")


class BenchConfig(_Strict):
    """The timing protocol on the boards (suite/timing.py; the same as evaluate.latency's)."""

    warmup: int = Field(default=20, ge=0)
    windows: int = Field(default=5, ge=2)  # at least; the paper averages five rounds
    window_queries: int = Field(default=100, ge=1)  # per window, at least this many inferences ...
    window_seconds: float = Field(default=2.0, ge=0)  # ... and at least this long (power meters sample slowly)
    max_windows: int = Field(default=20, ge=2)
    ci_share: float = Field(default=0.02, ge=0, lt=1)  # early stop: p50's 95% half-width under this share of it
    images: int = Field(default=64, ge=1)  # distinct test images cycled through


class Inventory(_Strict):
    boards: list[BoardConfig]
    bench: BenchConfig = BenchConfig()

    @model_validator(mode="after")
    def _unique(self) -> "Inventory":
        names = [b.name for b in self.boards]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate board names: {', '.join(dup)}")
        if not self.boards:
            raise ValueError("no boards listed")
        return self


def load_inventory(path: str | Path, only: list[str] | None = None) -> Inventory:
    """The boards file, validated; ``only`` keeps the named boards (an unknown name is an error)."""
    tree = read_yaml(path, "boards file", "see configs/boards.example.yaml")
    try:
        inventory = Inventory.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {one_line(exc)}") from None
    if only:
        known = [b.name for b in inventory.boards]
        unknown = [n for n in only if n not in known]
        if unknown:
            raise ConfigError(f"--only {unknown[0]}: no such board in {path}; its boards: {', '.join(known)}")
        inventory.boards = [b for b in inventory.boards if b.name in set(only)]
    for board in inventory.boards:  # said here, on the console: a key path never goes to MLflow
        if board.key_file and not Path(board.key_file).expanduser().is_file():
            raise ConfigError(f"{path}: board '{board.name}': key_file {board.key_file} does not exist; fix the path "
                              "or remove key_file to use the SSH agent")
    return inventory
