"""The job YAML: schema (pydantic), loading, and every check that can run before a process starts.

Loading is two passes over the file:

1. **structure** — :class:`JobConfig` (pydantic, unknown keys rejected) checks names,
   types and ranges;
2. **meaning** — :func:`check_job` checks what one key says about another (one active
   party, labels only on the active party, step order, addresses, CURVE keys, model
   parameters) and then the files: data files exist and have the named columns, the
   label fits the task, key files are readable.

Every problem is collected (not just the first) and reported as
``FILE:LINE: dotted.yaml.path: what is wrong``, so a user can fix them all in one go.
Relative paths in the job are relative to the directory of the YAML file.
"""

from __future__ import annotations

import math
import os
import re
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hefl.errors import ConfigError

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "STEP_KINDS",
    "DataSpec",
    "EvaluateStep",
    "HESpec",
    "HeteroLRParams",
    "Job",
    "JobConfig",
    "JobConfigError",
    "PartySpec",
    "PredictDataSpec",
    "PredictStep",
    "PsiStep",
    "SecureBoostParams",
    "TeePolicySpec",
    "TeeSpec",
    "Timeouts",
    "TrainStep",
    "load_job",
]

STEP_KINDS = ("psi", "train", "evaluate", "predict")
MODELS = ("secureboost", "hetero_lr")
TASKS = ("binary", "multiclass", "regression")

#: metric name -> tasks it applies to
METRICS: dict[str, tuple[str, ...]] = {
    "auc": ("binary", "multiclass"),
    "ks": ("binary",),
    "accuracy": ("binary", "multiclass"),
    "logloss": ("binary", "multiclass"),
    "precision": ("binary",),
    "recall": ("binary",),
    "f1": ("binary",),
    "rmse": ("regression",),
    "mae": ("regression",),
    "r2": ("regression",),
}
DEFAULT_METRICS = {
    "binary": ["auc", "ks", "accuracy", "logloss"],
    "multiclass": ["accuracy", "logloss"],
    "regression": ["rmse", "mae", "r2"],
}
#: a numeric label with at most this many distinct integer values counts as classes (task: auto)
MAX_AUTO_CLASSES = 20

_ADDRESS_RE = re.compile(r"tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(?P<port>[0-9]{1,5})\Z")
_BIND_RE = re.compile(r"tcp://(?P<host>\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(?P<port>[0-9]{1,5})\Z")


# ================================================================================= schema


class _Strict(BaseModel):
    # strict: no silent coercion of a wrong type (``learning_rate: true`` is not 1.0, ``seed: "7"``
    # is not 7); no inf / nan (``recv: .inf`` would overflow the transport's timers)
    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True, allow_inf_nan=False)


class DataSpec(_Strict):
    """A party's training data: one CSV or Parquet file."""

    path: str = Field(description="CSV or Parquet file (relative to the YAML file)")
    format: Literal["auto", "csv", "parquet"] = "auto"
    id_column: str = Field(description="column holding the row IDs (matched by PSI)")
    label_column: str | None = Field(None, description="the label (active party only)")
    columns: list[str] | None = Field(None, description="feature columns (default: all but ID and label)")
    sep: str = Field(",", min_length=1, description="CSV field separator")


class PredictDataSpec(_Strict):
    """A party's rows to predict; unset keys are taken from its training ``data``."""

    path: str
    format: Literal["auto", "csv", "parquet"] = "auto"
    id_column: str | None = None
    label_column: str | None = None
    columns: list[str] | None = None
    sep: str | None = None


class PartySpec(_Strict):
    """One party of the job."""

    role: Literal["active", "passive", "arbiter"]
    address: str | None = Field(None, description="tcp://HOST:PORT its peers connect to (multi-host runs)")
    bind: str | None = Field(None, description="local bind address when it differs, e.g. tcp://0.0.0.0:7001")
    curve_public_key: str | None = Field(None, description="this party's CurveZMQ public key file")
    curve_secret_key: str | None = Field(None, description="its secret key file (read only on its own host)")
    data: DataSpec | None = None


class HESpec(_Strict):
    """Homomorphic encryption settings (the active party generates the key)."""

    scheme: Literal["paillier", "ou", "ckks", "mock"] = "paillier"
    key_size: int = Field(2048, ge=256, le=8192)
    backend: Literal["auto", "cpu", "gpu"] = "auto"
    n_jobs: int | None = Field(None, description="CPU threads per party for HE batches (default: all cores)")
    allow_insecure: bool = Field(False, description="allow mock HE or keys below 2048 bits (tests only)")


class PsiStep(_Strict):
    """Align the parties' rows by ID with ECDH-PSI."""

    duplicates: Literal["raise", "drop"] = "raise"
    leader: str | None = None
    n_jobs: int = Field(1, ge=-1)
    batch_size: int = Field(4096, ge=1, le=1 << 20)


class TrainStep(_Strict):
    """Train a model; ``params`` are checked against the model's own parameter list."""

    model: Literal["secureboost", "hetero_lr"]
    task: Literal["auto", "binary", "multiclass", "regression"] = "auto"
    params: dict[str, Any] = Field(default_factory=dict)


class EvaluateStep(_Strict):
    """Score the model on rows held out of training (and on the training rows)."""

    metrics: list[str] | None = None
    test_size: float = Field(0.2, ge=0.0, lt=1.0)
    stratify: bool = True
    threshold: float = Field(0.5, gt=0.0, lt=1.0)


class PredictStep(_Strict):
    """Predict the rows of a second file per party; the active party writes ``predictions.csv``."""

    data: dict[str, PredictDataSpec]
    psi: bool | None = Field(None, description="align the files with PSI (default: when the job has a psi step)")
    threshold: float = Field(0.5, gt=0.0, lt=1.0)


class StepItem(_Strict):
    """One entry of ``steps``: a mapping with exactly one of the step kinds as key."""

    psi: PsiStep | None = None
    train: TrainStep | None = None
    evaluate: EvaluateStep | None = None
    predict: PredictStep | None = None

    @property
    def kind(self) -> str:
        # "" for an empty step ({}): check_job reports it; lookups must not raise StopIteration
        return next((k for k in STEP_KINDS if getattr(self, k) is not None), "")

    @property
    def spec(self) -> Any:
        return getattr(self, self.kind)


class Timeouts(_Strict):
    """Seconds."""

    connect: float = Field(300.0, gt=0, description="waiting for all peers to come up")
    recv: float = Field(600.0, gt=0, description="waiting for any one message")
    job: float = Field(86400.0, gt=0, description="the whole run (embedded mode)")
    heartbeat: float = Field(10.0, gt=0, description="silence after which a peer counts as lost")


class TeePolicySpec(_Strict):
    """One data party's data-use policy for the TEE aggregator (:mod:`hefl.tee.policy`)."""

    allow: list[str] = Field(description="operations the aggregator may perform on this party's data")
    max_rounds: int | None = Field(None, ge=0, description="most rounds (epochs) it takes part in")


class TeeSpec(_Strict):
    """Run the arbiter as an attested TEE aggregator (:mod:`hefl.tee`)."""

    aggregator: str | None = Field(None, description="the party (role: arbiter) hosted in the TEE (default: the arbiter)")
    provider: Literal["simulated"] = Field("simulated", description="attestation provider (simulated: NOT secure)")
    trusted_root: str | None = Field(None, description="hex public key of the provider's root "
                                                       "(default in embedded runs: a fresh simulated root)")
    signing_key: str | None = Field(None, description="simulated provider only: file with the hex private key "
                                                      "(read on the aggregator's host)")
    allowed_measurements: list[str] = Field(default_factory=lambda: ["local"],
                                            description="accepted code measurements; 'local' = this copy of hefl "
                                                        "with this job (see `hefl tee measure`)")
    max_quote_age: float = Field(300.0, gt=0, description="seconds a quote stays fresh")
    audit_log: str = Field("audit.jsonl", description="audit log file under OUTPUT/<aggregator>/")
    policies: dict[str, TeePolicySpec] = Field(default_factory=dict, description="data party -> its policy")


class JobConfig(_Strict):
    """The whole job file."""

    name: str | None = None
    description: str | None = None
    seed: int = Field(0, ge=0, lt=2**32, description="seeds the evaluate split and the models")
    parties: dict[str, PartySpec] = Field(default_factory=dict)
    he: HESpec = Field(default_factory=lambda: HESpec.model_validate({}))
    steps: list[StepItem] = Field(default_factory=list)
    output: str = "output"
    timeouts: Timeouts = Field(default_factory=lambda: Timeouts.model_validate({}))
    tee: TeeSpec | None = None


# ---------------------------------------------------------------- model parameters


class SecureBoostParams(_Strict):
    """``train.params`` of ``model: secureboost`` (XGBoost names)."""

    n_estimators: int = Field(100, ge=1, le=100000)
    learning_rate: float = Field(0.3, gt=0)
    max_depth: int = Field(6, ge=0, le=64)
    max_leaves: int = Field(0, ge=0)
    grow_policy: Literal["depthwise", "lossguide"] = "depthwise"
    max_bin: int = Field(32, ge=2, le=65535)
    reg_lambda: float = Field(1.0, ge=0)
    gamma: float = Field(0.0, ge=0)
    min_child_weight: float = Field(1.0, ge=0)
    subsample: float = Field(1.0, gt=0, le=1)
    colsample_bytree: float = Field(1.0, gt=0, le=1)
    early_stopping_rounds: int | None = Field(None, ge=1)
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    base_score: float | None = None
    random_state: int | None = Field(None, ge=0, lt=2**32, description="default: the job's seed")


class HeteroLRParams(_Strict):
    """``train.params`` of ``model: hetero_lr`` (the protocol follows from the parties: with an
    arbiter party the arbiter protocol, else the two-party one)."""

    max_iter: int = Field(100, ge=1)
    batch_size: int = Field(1024, ge=1)
    learning_rate: float = Field(0.1, gt=0)
    alpha: float = Field(1e-4, ge=0, description="penalty strength")
    penalty: Literal["l2", "l1"] | None = "l2"
    fit_intercept: bool = True
    tol: float | None = Field(1e-4, ge=0)
    optimizer: Literal["sgd", "momentum", "nesterov", "adagrad", "adam"] = "nesterov"
    momentum: float = Field(0.9, ge=0, lt=1)
    taylor: Literal["anchored", "zero"] = "anchored"
    random_state: int | None = Field(None, ge=0, lt=2**32, description="default: the job's seed")


MODEL_PARAMS: dict[str, type[BaseModel]] = {"secureboost": SecureBoostParams, "hetero_lr": HeteroLRParams}


# ================================================================================= errors


class JobConfigError(ConfigError):
    """One or more problems in a job file; ``problems`` lists ``(location, message)``."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [self.format(where, msg) for where, msg in problems]
        if len(lines) == 1:
            text = lines[0]
        else:
            text = "\n".join([f"{source}: {len(problems)} problems"] + [f"  {x}" for x in lines])
        super().__init__(text)

    def format(self, where: str, msg: str) -> str:
        if not where:
            return f"{self.source}: {msg}"
        if where[0].isdigit():
            return f"{self.source}:{where}: {msg}"
        return f"{self.source}: {where}: {msg}"

    def __reduce__(self):  # keep both arguments through pickling (run_local reports)
        return (type(self), (self.source, self.problems))


Loc = tuple[Any, ...]


class _Problems:
    """Collects problems with their YAML location (dotted path + line number)."""

    def __init__(self, lines: dict[Loc, int]):
        self.lines = lines
        self.items: list[tuple[str, str]] = []

    def add(self, loc: Iterable[Any], message: str) -> None:
        loc = tuple(loc)
        where = _dotted(loc)
        line = self._line(loc)
        prefix = (f"{line}: " if line else "") + where if (line or where) else ""
        self.items.append((prefix.rstrip(": "), message))

    def _line(self, loc: Loc) -> int | None:
        while True:
            if loc in self.lines:
                return self.lines[loc]
            if not loc:
                return None
            loc = loc[:-1]


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


# ================================================================================= YAML


#: Most YAML nodes a job file may have once aliases (``*name``) are expanded: a real job has
#: a few hundred; nested aliases ("billion laughs") would otherwise take hours to walk.
MAX_YAML_NODES = 100_000


def _yaml_error(source: str, exc: BaseException) -> JobConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f":{mark.line + 1}" if mark is not None else ""
    if isinstance(exc, RecursionError):
        return JobConfigError(source + where, [("", "not valid YAML: nested too deeply")])
    if isinstance(exc, yaml.YAMLError):
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        if context and problem != context:
            problem = f"{context}: {problem}"
        return JobConfigError(source + where, [("", f"not valid YAML: {problem}")])
    # a tagged scalar PyYAML cannot build (``!!float ''``, ``!!int x``, ``!!timestamp 99``)
    return JobConfigError(source, [("", f"not valid YAML: cannot build a value ({type(exc).__name__}: {exc})")])


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads YAML 1.2 floats: ``1e-3`` and ``1.0e20`` are
    numbers (YAML 1.1, PyYAML's default, wants a dot and a signed exponent and reads
    them as text, which the strict schema then refuses)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _compose(text: str, source: str) -> tuple[Any, dict[Loc, int]]:
    """Parse YAML, rejecting duplicate keys; ``(data, {path: line})``.

    Only plain YAML values are built (a ``yaml.SafeLoader``: no Python tags, nothing executed);
    every way the parser can fail becomes a :class:`JobConfigError` with the line.
    """
    try:
        node = yaml.compose(text, Loader=_Loader)
    except (yaml.YAMLError, RecursionError) as exc:
        raise _yaml_error(source, exc) from None
    if node is None:
        raise JobConfigError(source, [("", "the job file is empty")])
    lines: dict[Loc, int] = {}
    dups: list[tuple[str, str]] = []

    # iterative walk (a recursive one overflows on deeply nested documents), bounded
    stack: list[tuple[yaml.Node, Loc]] = [(node, ())]
    visited = 0
    while stack:
        n, loc = stack.pop()
        visited += 1
        if visited > MAX_YAML_NODES:
            why = f"more than {MAX_YAML_NODES} YAML values once aliases (*name) are expanded; a job is far smaller"
            raise JobConfigError(source, [("", why)])
        if isinstance(n, yaml.MappingNode):
            seen: set[Any] = set()
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else None
                if key in seen:
                    dups.append((f"{k.start_mark.line + 1}: {_dotted(loc + (key,))}",
                                 f"key {key!r} given twice"))
                seen.add(key)
                lines.setdefault(loc + (key,), k.start_mark.line + 1)
                stack.append((v, loc + (key,)))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                lines.setdefault(loc + (i,), v.start_mark.line + 1)
                stack.append((v, loc + (i,)))
    if dups:
        raise JobConfigError(source, sorted(dups, key=lambda d: int(d[0].split(":")[0])))
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: plain values only
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, IndexError, KeyError, OverflowError,
            AttributeError) as exc:
        raise _yaml_error(source, exc) from None
    return data, lines


# ================================================================================= resolved job


@dataclass
class Job:
    """A checked job: the config, with paths made absolute and the task resolved."""

    config: JobConfig
    path: Path
    base_dir: Path
    output: Path
    task: str | None  # None: not known here (active party's data not on this host)
    lines: dict[Loc, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name or self.path.stem

    @property
    def parties(self) -> dict[str, PartySpec]:
        return self.config.parties

    @property
    def active(self) -> str:
        return next(n for n, p in self.config.parties.items() if p.role == "active")

    @property
    def passive(self) -> list[str]:
        return [n for n, p in self.config.parties.items() if p.role == "passive"]

    @property
    def arbiter(self) -> str | None:
        return next((n for n, p in self.config.parties.items() if p.role == "arbiter"), None)

    @property
    def data_parties(self) -> list[str]:
        return [self.active] + self.passive

    def step(self, kind: str) -> Any:
        for s in self.config.steps:
            if s.kind == kind:
                return s.spec
        return None

    @property
    def step_kinds(self) -> list[str]:
        return [s.kind for s in self.config.steps]

    @property
    def train(self) -> TrainStep:
        return self.step("train")

    def model_params(self) -> BaseModel:
        t = self.train
        return MODEL_PARAMS[t.model].model_validate(t.params)

    def resolve(self, p: str) -> Path:
        q = Path(os.path.expanduser(p))
        return Path(os.path.normpath(q if q.is_absolute() else (self.base_dir / q)))

    def curve_enabled(self) -> bool:
        return any(p.curve_public_key for p in self.config.parties.values())

    def addresses(self) -> dict[str, str]:
        return {n: p.address for n, p in self.config.parties.items() if p.address}


def load_job(path: str | os.PathLike, *, party: str | None = None, check_files: bool = True,
             output: str | os.PathLike | None = None, curve_secret_key: str | os.PathLike | None = None) -> Job:
    """Read and check a job file.

    Parameters
    ----------
    path : path
        The YAML file.
    party : str, optional
        Check the job from this party's point of view (``hefl run --party``): only its own
        data and key files must exist here, and every party needs an address.
    check_files : bool
        Also open the data and key files (headers, label values).
    output : path, optional
        Overrides the job's ``output`` directory.
    curve_secret_key : path, optional
        ``party``'s CurveZMQ secret key file (``--curve-secret-key``), checked instead of the
        job's ``curve_secret_key``.

    Raises
    ------
    JobConfigError
        Every problem found, each with its YAML path and line.
    """
    p = Path(path)
    source = os.fspath(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobConfigError(source, [("", "no such job file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JobConfigError(source, [("", f"cannot read the job file: {exc}")]) from None
    data, lines = _compose(text, source)
    if not isinstance(data, dict):
        what = type(data).__name__
        raise JobConfigError(source, [("", f"a job file is a mapping (parties:, steps: …), not a {what}")])
    steps = data.get("steps")
    for item in steps if isinstance(steps, list) else []:
        if isinstance(item, dict) and len(item) == 1:
            ((kind, value),) = item.items()
            if kind in STEP_KINDS and value is None:
                item[kind] = {}  # "- psi:" (nothing after the colon) means "- psi: {}"
    problems = _Problems(lines)
    try:
        config = JobConfig.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            _pydantic_problem(problems, err)
        raise JobConfigError(source, problems.items) from None
    base = p.resolve().parent
    job = Job(config=config, path=p.resolve(), base_dir=base, output=Path(), task=None, lines=lines)
    job.output = Path(output).resolve() if output is not None else job.resolve(config.output)
    check_job(job, problems, party=party, check_files=check_files,
              curve_secret_key=None if curve_secret_key is None else os.fspath(curve_secret_key))
    if problems.items:
        raise JobConfigError(source, problems.items)
    return job


def _pydantic_problem(problems: _Problems, err: Any) -> None:
    loc = tuple(err.get("loc", ()))
    typ = err.get("type", "")
    if typ == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        hint = f" (allowed here: {', '.join(allowed)})" if allowed else ""
        if len(loc) == 3 and loc[0] == "steps" and isinstance(loc[1], int):
            hint = f" (a step is one of: {', '.join(STEP_KINDS)})"
        problems.add(loc, f"unknown key {loc[-1]!r}{hint}")
    elif typ == "missing":
        problems.add(loc, f"missing required key {loc[-1]!r}")
    else:
        msg = err.get("msg", "invalid value")
        given = err.get("input")
        if typ in ("model_type", "dict_type", "list_type") and given is None:
            msg = f"{msg} (the key is empty)"
            problems.add(loc, msg)
            return
        if not isinstance(given, (dict, list)):
            msg = f"{msg}, got {given!r}"
        problems.add(loc, msg)


def _fields_at(loc: Loc) -> list[str]:
    """Allowed keys of the schema model at ``loc`` (for 'unknown key' messages)."""
    tp: Any = JobConfig
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            f = tp.model_fields.get(str(part))
            if f is None:
                return []
            tp = f.annotation
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    """``X | None`` -> ``X``."""
    args = typing.get_args(tp)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


# ================================================================================= meaning


def _check_address(problems: _Problems, loc: Loc, value: str, bind: bool = False) -> tuple[str, int] | None:
    m = (_BIND_RE if bind else _ADDRESS_RE).match(value)
    if not m:
        example = "tcp://0.0.0.0:7001" if bind else "tcp://10.0.0.5:7001"
        problems.add(loc, f"{value!r} is not a tcp://HOST:PORT address (e.g. {example})")
        return None
    port = int(m.group("port"))
    if not 1 <= port <= 65535:
        problems.add(loc, f"port {port} out of range 1-65535 in {value!r}")
        return None
    return m.group("host"), port


def check_job(job: Job, problems: _Problems, *, party: str | None = None, check_files: bool = True,
              curve_secret_key: str | None = None) -> None:
    """Cross-key and file checks (see the module docstring); adds to ``problems``."""
    from hefl.transport import wire

    cfg = job.config
    parties = cfg.parties
    # ---- parties
    if party is not None and party not in parties:
        problems.add(("parties",), f"--party {party!r} is not a party of this job "
                                   f"(parties: {', '.join(parties) or 'none'})")
        party = None
    for name in parties:
        try:
            wire.validate_name(name)
        except ValueError as exc:
            problems.add(("parties", name), str(exc))
            continue
        if not name.strip("."):  # a party's outputs go to OUTPUT/<name>/
            problems.add(("parties", name), f"party name {name!r} is a directory name of its own "
                                            "(., ..); name the party with a letter or digit")
    if not parties:
        problems.add(("parties",), "no parties: name at least an active and a passive party")
    actives = [n for n, p in parties.items() if p.role == "active"]
    passives = [n for n, p in parties.items() if p.role == "passive"]
    arbiters = [n for n, p in parties.items() if p.role == "arbiter"]
    if len(actives) == 0:
        problems.add(("parties",), "no active party: exactly one party needs role: active (it holds the label)")
    elif len(actives) > 1:
        problems.add(("parties", actives[1], "role"),
                     f"{len(actives)} active parties ({', '.join(actives)}); exactly one party holds the label")
    if not passives:
        problems.add(("parties",), "no passive party: a vertical job needs at least one role: passive party")
    if len(arbiters) > 1:
        problems.add(("parties", arbiters[1], "role"), f"at most one arbiter, got {', '.join(arbiters)}")
    train = next((s.train for s in cfg.steps if s.train is not None), None)
    if arbiters and train is not None and train.model != "hetero_lr":
        problems.add(("parties", arbiters[0], "role"),
                     f"model {train.model!r} has no arbiter role (only hetero_lr uses one)")

    if cfg.tee is not None:
        _check_tee(cfg, problems, arbiters, train)

    for name, p in parties.items():
        loc: Loc = ("parties", name)
        if p.role in ("active", "passive") and p.data is None:
            problems.add(loc, f"missing required key 'data' ({'an' if p.role == 'active' else 'a'} {p.role} "
                                  "party trains on its own data)")
        if p.role == "arbiter" and p.data is not None:
            problems.add(loc + ("data",), "an arbiter holds no data; remove this key")
        if p.data is not None:
            if p.role == "passive" and p.data.label_column is not None:
                problems.add(loc + ("data", "label_column"),
                             f"a passive party holds no label; remove label_column "
                             f"(only the active party{' ' + repr(actives[0]) if actives else ''} has the label)")
            if p.role == "active" and p.data.label_column is None and name == actives[0]:
                problems.add(loc + ("data",), "missing required key 'label_column' (the active party holds the label)")
            d = p.data
            if d.label_column is not None and d.label_column == d.id_column:
                problems.add(loc + ("data", "label_column"), "the label column cannot be the ID column")
            if d.columns is not None:
                if not d.columns:
                    problems.add(loc + ("data", "columns"), "an empty column list: omit the key to use all columns")
                dup = sorted({c for c in d.columns if d.columns.count(c) > 1})
                if dup:
                    problems.add(loc + ("data", "columns"), f"columns listed twice: {dup}")
                for c in (d.id_column, d.label_column):
                    if c is not None and c in d.columns:
                        problems.add(loc + ("data", "columns"),
                                     f"{c!r} is the ID or label column, not a feature")

    # addresses
    seen_addr: dict[tuple[str, int], str] = {}
    for name, p in parties.items():
        if p.address is not None:
            hp = _check_address(problems, ("parties", name, "address"), p.address)
            if hp is not None:
                if hp in seen_addr:
                    problems.add(("parties", name, "address"),
                                 f"{p.address!r} is also the address of {seen_addr[hp]!r}")
                seen_addr.setdefault(hp, name)
        if p.bind is not None:
            _check_address(problems, ("parties", name, "bind"), p.bind, bind=True)
    if party is not None:
        missing = [n for n, p in parties.items() if not p.address]
        if missing:
            for n in missing:
                problems.add(("parties", n), "missing 'address': a --party run connects to every party "
                                             "at its tcp://HOST:PORT")

    # CURVE keys
    with_pub = [n for n, p in parties.items() if p.curve_public_key]
    if with_pub and len(with_pub) != len(parties):
        for n, p in parties.items():
            if not p.curve_public_key:
                problems.add(("parties", n), "missing 'curve_public_key': when one party has a CURVE key, "
                                             "every party needs one (hefl keygen)")
    for n, p in parties.items():
        if p.curve_secret_key and not p.curve_public_key:
            problems.add(("parties", n, "curve_secret_key"), "curve_secret_key without curve_public_key")
    if curve_secret_key is not None and not with_pub:
        problems.add(("parties",), "--curve-secret-key is given, but no party has a curve_public_key: "
                                   "this job would run without CurveZMQ (list every party's public key "
                                   "to use it, or drop the option)")

    # ---- HE
    he = cfg.he
    if he.scheme == "mock" and not he.allow_insecure:
        problems.add(("he", "scheme"), "scheme 'mock' sends values in the clear; set he.allow_insecure: true "
                                       "to use it (tests only)")
    if train is not None and train.model == "secureboost" and he.scheme == "ckks":
        problems.add(("he", "scheme"), "secureboost needs an additive scheme with exact sums "
                                       "(paillier, ou or mock), not ckks")
    if train is not None and train.model == "hetero_lr" and he.scheme == "ou":
        problems.add(("he", "scheme"), "hetero_lr runs on paillier, ckks or mock, not ou")
    if he.scheme in ("paillier", "ou") and he.key_size < 2048 and not he.allow_insecure:
        problems.add(("he", "key_size"), f"key_size {he.key_size} is below 2048 bits; set "
                                         "he.allow_insecure: true to allow it (tests only)")
    if he.n_jobs is not None and he.n_jobs < 1:
        problems.add(("he", "n_jobs"), f"n_jobs must be ≥ 1 (or omitted for all cores), got {he.n_jobs}")
    if he.scheme == "paillier" and he.key_size % 2:
        problems.add(("he", "key_size"), f"a Paillier key_size must be even (two primes of equal size), "
                                         f"got {he.key_size}")
    if he.scheme == "ou" and he.key_size < 1024:
        problems.add(("he", "key_size"), f"an OU key needs at least 1024 bits, got {he.key_size}")
    if train is not None and train.model == "hetero_lr" and he.scheme == "ckks" and len(passives) > 1:
        problems.add(("he", "scheme"), f"hetero_lr on ckks supports one passive party, this job has "
                                       f"{len(passives)} ({', '.join(passives)}); use paillier")

    # ---- steps
    kinds = [s.kind if _one_kind(s) else None for s in cfg.steps]
    for i, s in enumerate(cfg.steps):
        set_ = [k for k in STEP_KINDS if getattr(s, k) is not None]
        if len(set_) != 1:
            problems.add(("steps", i), "each step is a mapping with exactly one of "
                                       f"{', '.join(STEP_KINDS)}, got {set_ or 'none'}")
    if not cfg.steps:
        problems.add(("steps",), "no steps: give at least a train step "
                                 "(e.g. steps: [{psi: {}}, {train: {model: secureboost}}])")
    first: dict[str, int] = {}
    for i, k in enumerate(kinds):
        if k is None:
            continue
        if k in first:
            problems.add(("steps", i, k), f"a second {k} step (steps[{first[k]}] is one); each step runs once")
        first.setdefault(k, i)
    if "train" not in first and cfg.steps:
        problems.add(("steps",), "no train step: evaluate and predict need a model trained in this job")
    if "psi" in first and "train" in first and first["psi"] > first["train"]:
        problems.add(("steps", first["psi"], "psi"), "psi must come before train")
    for k in ("evaluate", "predict"):
        if k in first and "train" in first and first[k] < first["train"]:
            problems.add(("steps", first[k], k), f"{k} must come after train")

    if train is not None and "train" in first:
        i = first["train"]
        cls = MODEL_PARAMS[train.model]
        try:
            cls.model_validate(train.params)
        except ValidationError as exc:
            for detail in exc.errors():
                err: dict[str, Any] = dict(detail)
                err["loc"] = ("steps", i, "train", "params", *tuple(err.get("loc", ())))
                if err.get("type") == "extra_forbidden":
                    key = err["loc"][-1]
                    problems.add(err["loc"], f"unknown {train.model} parameter {key!r} "
                                             f"(allowed: {', '.join(cls.model_fields)})")
                else:
                    _pydantic_problem(problems, err)
    if train is not None and "train" in first and train.model == "secureboost":
        tp = train.params
        loc_p: Loc = ("steps", first["train"], "train", "params")
        if tp.get("max_depth") == 0 and not tp.get("max_leaves"):
            problems.add(loc_p + ("max_depth",), "max_depth: 0 (unlimited) needs max_leaves > 0")
    psi_step = job.step("psi") if "psi" in first else None
    if psi_step is not None and psi_step.n_jobs == 0:
        problems.add(("steps", first["psi"], "psi", "n_jobs"),
                     "n_jobs must be a number of processes ≥ 1, or -1 for one per core; got 0")
    if psi_step is not None and psi_step.leader is not None and psi_step.leader not in job_data_parties(cfg):
        problems.add(("steps", first["psi"], "psi", "leader"),
                     f"leader {psi_step.leader!r} is not a party holding data ({', '.join(job_data_parties(cfg))})")
    ev = job.step("evaluate") if "evaluate" in first else None
    if ev is not None and ev.metrics is not None:
        if not ev.metrics:
            problems.add(("steps", first["evaluate"], "evaluate", "metrics"),
                         "an empty metric list: omit the key for the task's defaults")
        for m in ev.metrics:
            if m not in METRICS:
                problems.add(("steps", first["evaluate"], "evaluate", "metrics"),
                             f"unknown metric {m!r} (known: {', '.join(METRICS)})")
    pr = job.step("predict") if "predict" in first else None
    if pr is not None:
        loc = ("steps", first["predict"], "predict", "data")
        holders = job_data_parties(cfg)
        for n in pr.data:
            if n not in parties:
                problems.add(loc + (n,), f"{n!r} is not a party of this job")
            elif n not in holders:
                problems.add(loc + (n,), f"{n!r} holds no data (role {parties[n].role})")
        for n in holders:
            if n not in pr.data:
                problems.add(loc, f"missing the rows to predict of party {n!r} (every party with data "
                                  "gives its columns of the same rows)")
        for n, d in pr.data.items():
            if n in parties and parties[n].role == "passive" and d.label_column is not None:
                problems.add(loc + (n, "label_column"), "a passive party holds no label; remove label_column")

    if problems.items or not check_files:
        return
    _check_files(job, problems, party, curve_secret_key)


def _check_tee(cfg: JobConfig, problems: _Problems, arbiters: list[str], train: Any) -> None:
    from hefl.tee.policy import OPERATIONS

    tee = cfg.tee
    assert tee is not None
    if train is not None and train.model != "hetero_lr":
        problems.add(("tee",), f"the TEE aggregator hosts hetero_lr's arbiter role; model {train.model!r} has none")
    if not arbiters:
        problems.add(("tee",), "a tee section needs a party with role: arbiter (the aggregator)")
    elif tee.aggregator is not None and tee.aggregator not in arbiters:
        problems.add(("tee", "aggregator"), f"{tee.aggregator!r} is not the job's arbiter ({arbiters[0]!r})")
    data = [n for n, p in cfg.parties.items() if p.role in ("active", "passive")]
    for n in data:
        if n not in tee.policies:
            problems.add(("tee", "policies"), f"no data-use policy for party {n!r} (every data party states one)")
    for n, pol in tee.policies.items():
        if n not in data:
            problems.add(("tee", "policies", n), f"{n!r} is not a data party of this job")
        for op in pol.allow:
            if op not in OPERATIONS:
                problems.add(("tee", "policies", n, "allow"),
                             f"unknown operation {op!r}; known: {', '.join(OPERATIONS)}")
    if tee.trusted_root is not None:
        try:
            if len(bytes.fromhex(tee.trusted_root)) != 32:
                raise ValueError
        except ValueError:
            problems.add(("tee", "trusted_root"), "must be 64 hex digits (an Ed25519 public key)")
    for i, m in enumerate(tee.allowed_measurements):
        if m != "local" and not re.fullmatch(r"[0-9a-fA-F]{64}", m):
            problems.add(("tee", "allowed_measurements", i), f"{m!r} is neither 'local' nor 64 hex digits")


def _one_kind(s: StepItem) -> bool:
    return sum(getattr(s, k) is not None for k in STEP_KINDS) == 1


def job_data_parties(cfg: JobConfig) -> list[str]:
    return [n for n, p in cfg.parties.items() if p.role in ("active", "passive")]


# ================================================================================= files


def data_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suf = path.suffix.lower()
    if suf in (".parquet", ".pq"):
        return "parquet"
    return "csv"


def read_columns(path: Path, fmt: str, sep: str) -> list[str]:
    """Column names of a data file (reads only its header / schema)."""
    import pandas as pd

    if data_format(path, fmt) == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError("reading Parquet needs pyarrow (pip install pyarrow)") from None
        return list(pq.read_schema(path).names)
    return [str(c) for c in pd.read_csv(path, sep=sep, nrows=0).columns]


def _check_data_file(job: Job, problems: _Problems, loc: Loc, path: str, fmt: str, sep: str,
                     wanted: list[tuple[str, str | None]]) -> Path | None:
    f = job.resolve(path)
    if not f.exists():
        problems.add(loc + ("path",), f"no such file: {f}")
        return None
    if not f.is_file():
        problems.add(loc + ("path",), f"not a file: {f}")
        return None
    from ._data import ragged_rows  # here: _data imports this module

    try:
        cols = read_columns(f, fmt, sep)
        ragged = ragged_rows(f, sep) if data_format(f, fmt) == "csv" else None
    except ConfigError as exc:
        problems.add(loc + ("path",), str(exc))
        return None
    except Exception as exc:  # noqa: BLE001 - any reader failure is a problem with the file
        problems.add(loc + ("path",), f"cannot read {f}: {type(exc).__name__}: {exc}")
        return None
    if ragged is not None:
        problems.add(loc + ("path",), ragged)
        return None
    for key, col in wanted:
        if col is None:
            continue
        if key == "columns":
            continue
        if col not in cols:
            hint = ""
            if len(cols) == 1 and data_format(f, fmt) == "csv":
                other = next((c for c in (",", ";", "\t", "|") if c != sep and c in cols[0]), None)
                if other is not None:
                    hint = f"; the header is one column: is the separator {other!r}, not {sep!r}? (data.sep)"
            problems.add(loc + (key,), f"no column {col!r} in {f.name} (columns: {_preview(cols)}){hint}")
    return f


def _preview(cols: list[str]) -> str:
    return ", ".join(cols[:12]) + (f", … ({len(cols)} in all)" if len(cols) > 12 else "")


def _check_columns(job: Job, problems: _Problems, loc: Loc, f: Path, fmt: str, sep: str,
                   columns: list[str] | None) -> None:
    if columns is None:
        return
    cols = read_columns(f, fmt, sep)
    missing = [c for c in columns if c not in cols]
    if missing:
        problems.add(loc + ("columns",), f"no column(s) {missing} in {f.name} (columns: {_preview(cols)})")


#: what a party writes under OUTPUT/<party>/ (an input file there would be overwritten)
OUTPUT_FILES = ("model.json", "metrics.json", "predictions.csv", "party.log", "roc.png", "loss.png",
                "importance.png")


def _check_output(job: Job, problems: _Problems, mine: list[str]) -> None:
    """The output directory can be created, and no party's outputs land on an input file."""
    out = job.output
    first = next((q for q in (out, *out.parents) if q.exists()), None)
    if first is not None and not first.is_dir():
        what = "is a file" if first == out else f"is below the file {first}"
        problems.add(("output",), f"{out} {what}; output needs a directory")
        return
    inputs: dict[Path, Loc] = {}
    for name, p in job.config.parties.items():
        if p.data is not None:
            inputs[job.resolve(p.data.path)] = ("parties", name, "data", "path")
    pr = job.step("predict")
    if pr is not None:
        i = job.step_kinds.index("predict")
        for name, d in pr.data.items():
            inputs.setdefault(job.resolve(d.path), ("steps", i, "predict", "data", name, "path"))
    for name in mine:
        sub = out / name
        if sub.exists() and not sub.is_dir():
            problems.add(("output",), f"{sub} is a file; party {name!r} writes its outputs in a directory there")
            continue
        for fname in OUTPUT_FILES:
            if sub / fname in inputs:
                problems.add(inputs[sub / fname], f"{sub / fname} is an input of this job and an output of party "
                                                  f"{name!r}: the run would overwrite it; choose another output")


def _check_key_file(problems: _Problems, loc: Loc, kf: Path, load: Any, hint: str) -> None:
    """A CURVE key file exists and ``load`` reads it."""
    if not kf.exists():
        problems.add(loc, f"no such key file: {kf} ({hint})")
        return
    try:
        load(kf)
    except ConfigError as exc:
        problems.add(loc, str(exc))


def _check_ids(job: Job, problems: _Problems, loc: Loc, f: Path, fmt: str, sep: str, id_column: str,
               fix: str | None) -> None:
    """Empty IDs, and repeated ones when PSI is to refuse them (``fix`` says how to allow them)."""
    import pandas as pd

    try:
        if data_format(f, fmt) == "parquet":
            ids = pd.read_parquet(f, columns=[id_column])[id_column]
            empty = ids.isna() | (ids.astype(str) == "")
            ids = ids.astype(str)
        else:
            ids = pd.read_csv(f, sep=sep, usecols=[id_column], dtype=str, keep_default_na=False,
                              na_values=[])[id_column]
            empty = ids == ""
    except Exception as exc:  # noqa: BLE001 - any reader failure is a problem with the file
        problems.add(loc + ("path",), f"cannot read {f}: {type(exc).__name__}: {exc}")
        return
    if len(ids) == 0:
        problems.add(loc + ("path",), f"{f.name} has no rows (only a header)")
        return
    rows = empty.to_numpy().nonzero()[0]
    if rows.size:
        problems.add(loc + ("id_column",), f"empty ID in column {id_column!r} of {f.name} at data row "
                                           f"{int(rows[0]) + 1} ({rows.size} empty in all)")
    if fix is None:
        return
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        first = ids[dup].iloc[0]
        at = (ids == first).to_numpy().nonzero()[0][:3] + 1
        n_dup = int(ids.duplicated(keep="first").sum())
        problems.add(loc + ("id_column",), f"ID {first!r} appears more than once in {f.name} (data rows "
                                           f"{', '.join(map(str, at))}; {n_dup} repeated ID(s) in all): {fix}")


def _train_features(job: Job, name: str) -> list[str] | None:
    """The feature columns party ``name`` trains on (as read_table picks them)."""
    d = job.config.parties[name].data
    if d is None:
        return None
    if d.columns is not None:
        return list(d.columns)
    cols = read_columns(job.resolve(d.path), d.format, d.sep)
    return [c for c in cols if c not in (d.id_column, d.label_column)]


def _check_files(job: Job, problems: _Problems, party: str | None, curve_secret_key: str | None = None) -> None:
    cfg = job.config
    mine = [party] if party is not None else list(cfg.parties)
    _check_output(job, problems, mine)
    psi = job.step("psi")
    psi_fix = None
    if psi is not None and psi.duplicates == "raise":
        psi_fix = (f"PSI needs distinct IDs; give each row its own ID or set "
                   f"steps[{job.step_kinds.index('psi')}].psi.duplicates: drop to keep the first of each")
    for name in mine:
        p = cfg.parties[name]
        loc: Loc = ("parties", name, "data")
        if p.data is not None:
            d = p.data
            f = _check_data_file(job, problems, loc, d.path, d.format, d.sep,
                                 [("id_column", d.id_column), ("label_column", d.label_column)])
            if f is not None:
                # each party's file is checked on its own: one party's problem does not
                # hide another's (the checks of one file build on each other)
                before = len(problems.items)
                _check_columns(job, problems, loc, f, d.format, d.sep, d.columns)
                if len(problems.items) == before:
                    _check_ids(job, problems, loc, f, d.format, d.sep, d.id_column, psi_fix)
                if p.role == "active" and d.label_column and len(problems.items) == before:
                    _resolve_task(job, problems, f, d)
    # prediction files
    pr = job.step("predict")
    if pr is not None:
        i = job.step_kinds.index("predict")
        for name in mine:
            d = pr.data.get(name)
            p = cfg.parties[name]
            if d is None or p.data is None:
                continue
            loc = ("steps", i, "predict", "data", name)
            sep = d.sep or p.data.sep
            f = _check_data_file(job, problems, loc, d.path, d.format, sep,
                                 [("id_column", d.id_column or p.data.id_column), ("label_column", d.label_column)])
            if d.columns is not None:
                try:
                    train_cols = _train_features(job, name)
                except Exception:  # noqa: BLE001 - the training file's own problem is reported above
                    train_cols = None
                if train_cols is not None and sorted(d.columns) != sorted(train_cols):
                    problems.add(loc + ("columns",),
                                 f"the model takes the feature(s) it is trained on, read by name "
                                 f"({_preview(train_cols)}); omit this key")
            if f is not None:
                before = len(problems.items)
                _check_columns(job, problems, loc, f, d.format, sep, d.columns or p.data.columns)
                if d.columns is None and p.data.columns is None and len(problems.items) == before:
                    # the model takes the training file's features: the prediction file needs them all
                    train_cols = _train_features(job, name) or []
                    have = read_columns(f, d.format, sep)
                    missing = [c for c in train_cols if c not in have]
                    if missing:
                        problems.add(loc + ("path",), f"{f.name} lacks the feature column(s) {missing[:10]} the model "
                                                      f"is trained on (from {job.resolve(p.data.path).name})")
                if len(problems.items) == before:
                    uses_psi = pr.psi if pr.psi is not None else psi is not None
                    fix = None
                    if uses_psi and (psi is None or psi.duplicates == "raise"):
                        fix = "PSI of the prediction rows needs distinct IDs"
                    _check_ids(job, problems, loc, f, d.format, sep, d.id_column or p.data.id_column, fix)
    # CURVE keys: a --party run needs its secret key and every public key
    if party is not None and job.curve_enabled():
        from hefl.transport.curve import load_public_key, load_secret_key

        for name, p in cfg.parties.items():
            if p.curve_public_key:
                _check_key_file(problems, ("parties", name, "curve_public_key"), job.resolve(p.curve_public_key),
                                load_public_key, f"copy {name}'s public key here; hefl keygen writes it")
        p = cfg.parties[party]
        if curve_secret_key is not None:  # --curve-secret-key: relative to where hefl runs
            _check_key_file(problems, (), Path(curve_secret_key).resolve(), load_secret_key,
                            f"--curve-secret-key; hefl keygen --out DIR --name {party} writes it")
        elif not p.curve_secret_key:
            problems.add(("parties", party), "missing 'curve_secret_key': this party's secret key file "
                                             "(or pass --curve-secret-key)")
        else:
            _check_key_file(problems, ("parties", party, "curve_secret_key"), job.resolve(p.curve_secret_key),
                            load_secret_key, f"hefl keygen --out DIR --name {party}")
    elif party is None and job.curve_enabled():
        job.warnings.append("CURVE keys are configured: an embedded run uses fresh keys on loopback; "
                            "the key files are read by --party runs")


def resolve_task(values: Any, declared: str) -> str:
    """``declared`` unless ``"auto"``: then classification for text / bool labels and for integer
    labels with at most ``MAX_AUTO_CLASSES`` distinct values, regression otherwise."""
    import numpy as np
    import pandas as pd

    if declared != "auto":
        return declared
    s = pd.Series(values).dropna()
    if s.dtype == object or s.dtype == bool or isinstance(s.dtype, pd.CategoricalDtype):
        return "binary" if s.nunique() == 2 else "multiclass"
    v = s.to_numpy(dtype=np.float64)
    uniq = np.unique(v)
    if np.all(np.mod(uniq, 1) == 0) and uniq.size <= MAX_AUTO_CLASSES:
        return "binary" if uniq.size == 2 else "multiclass"
    return "regression"


def _resolve_task(job: Job, problems: _Problems, f: Path, d: DataSpec) -> None:
    import numpy as np
    import pandas as pd

    train = job.train
    if train is None:
        return
    i = job.step_kinds.index("train")
    try:
        if data_format(f, d.format) == "parquet":
            labels = pd.read_parquet(f, columns=[d.label_column])[d.label_column]
        else:
            labels = pd.read_csv(f, sep=d.sep, usecols=[d.label_column])[d.label_column]
    except Exception as exc:  # noqa: BLE001
        problems.add(("parties", job.active, "data", "label_column"), f"cannot read the label: {exc}")
        return
    if labels.isna().any():
        problems.add(("parties", job.active, "data", "label_column"),
                     f"the label {d.label_column!r} is missing in {int(labels.isna().sum())} row(s) of {f.name}")
        return
    if pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels):
        inf = np.isinf(labels.to_numpy(dtype=np.float64)).nonzero()[0]
        if inf.size:
            problems.add(("parties", job.active, "data", "label_column"),
                         f"the label {d.label_column!r} is infinite in {inf.size} row(s) of {f.name} "
                         f"(first at data row {int(inf[0]) + 1})")
            return
    task = resolve_task(labels, train.task)
    n_uniq = labels.nunique()
    if task in ("binary", "multiclass"):
        if n_uniq < 2:
            problems.add(("parties", job.active, "data", "label_column"),
                         f"the label {d.label_column!r} has a single value; classification needs two classes")
        elif task == "binary" and n_uniq != 2:
            problems.add(("steps", i, "train", "task"),
                         f"task binary, but the label {d.label_column!r} has {n_uniq} distinct values")
    if task == "regression":
        try:
            labels.astype(float)
        except (TypeError, ValueError):
            problems.add(("steps", i, "train", "task"),
                         f"task regression needs a numeric label; {d.label_column!r} is not")
    job.task = task
    ev = job.step("evaluate")
    if ev is not None and ev.metrics:
        j = job.step_kinds.index("evaluate")
        for m in ev.metrics:
            if m in METRICS and task not in METRICS[m]:
                problems.add(("steps", j, "evaluate", "metrics"),
                             f"metric {m!r} does not apply to a {task} task "
                             f"(for {task}: {', '.join(k for k, v in METRICS.items() if task in v)})")
    bs = train.params.get("base_score") if train.model == "secureboost" else None
    if task == "binary" and isinstance(bs, (int, float)) and not 0.0 < bs < 1.0:
        problems.add(("steps", i, "train", "params", "base_score"),
                     f"base_score of a binary task is a probability in (0, 1), got {bs}")
    if ev is not None and ev.test_size > 0:
        # the held-out rows are drawn stratified by class: each class needs a test row
        j = job.step_kinds.index("evaluate")
        n = len(labels)
        n_test = math.ceil(ev.test_size * n)
        classes = n_uniq if task in ("binary", "multiclass") and ev.stratify else 1
        if n_test < max(1, classes) or n - n_test < max(2, classes):
            problems.add(("steps", j, "evaluate", "test_size"),
                         f"test_size {ev.test_size} of {n} rows holds out {n_test} row(s) and leaves "
                         f"{n - n_test} for training; "
                         + (f"drawn stratified, each side needs a row of each of the {classes} classes"
                            if classes > 1 else "that needs at least 1 test and 2 training rows"))
