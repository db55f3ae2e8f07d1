"""Eval datasets: what to run (the target), the cases, and the checks each run must pass.

A dataset is a YAML (or JSON) file, or a Python module that builds a ``Dataset``; both validate
against the same Pydantic models, and a bad file is reported in one line naming the file, the
location in it (``cases[2].checks[0].pattern``) and, for YAML, the line.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from keel.errors import DatasetError, MissingDependencyError

__all__ = [
    "AgentTarget",
    "Case",
    "Check",
    "CitationsCheck",
    "ContainsCheck",
    "CustomCheck",
    "Dataset",
    "Defaults",
    "ExactCheck",
    "ExpectedCall",
    "ExpectedSource",
    "FunctionTarget",
    "JsonSchemaCheck",
    "JudgeCheck",
    "ModelTarget",
    "PydanticCheck",
    "QATarget",
    "RegexCheck",
    "Target",
    "ToolCallsCheck",
    "load_dataset",
    "resolve_reference",
    "shipped_suites",
]

SUITES = Path(__file__).parent / "suites"
_REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _reference(value: str) -> str:
    if not _REFERENCE.match(value):
        raise ValueError(f"{value!r} is not a 'module:name' reference")
    return value


Reference = Annotated[str, AfterValidator(_reference)]
"""A Python object named as 'package.module:name'."""


# Checks ------------------------------------------------------------------------------------


class ExactCheck(_Strict):
    """The output equals ``value`` (surrounding whitespace ignored unless ``strip`` is false)."""

    type: Literal["exact"]
    value: str
    strip: bool = True
    case_sensitive: bool = True


class ContainsCheck(_Strict):
    """The output contains the value(s): all of them (``mode: all``) or at least one."""

    type: Literal["contains"]
    value: str | list[str]
    mode: Literal["all", "any"] = "all"
    case_sensitive: bool = False

    @property
    def values(self) -> list[str]:
        return [self.value] if isinstance(self.value, str) else list(self.value)


class RegexCheck(_Strict):
    """``pattern`` is found in the output (``re.search``; ``full: true`` for ``re.fullmatch``)."""

    type: Literal["regex"]
    pattern: str
    ignore_case: bool = False
    full: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
        return value


class JsonSchemaCheck(_Strict):
    """The output is JSON that validates against ``schema`` (JSON Schema, draft 2020-12)."""

    type: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(alias="schema")

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            import jsonschema
        except ImportError:
            return value  # checked again, with a clear error, when the check runs
        try:
            jsonschema.Draft202012Validator.check_schema(value)
        except jsonschema.SchemaError as e:
            raise ValueError(f"not a valid JSON schema: {e.message}") from None
        return value


class PydanticCheck(_Strict):
    """The output is JSON that validates as the Pydantic model ``model`` ('module:Class')."""

    type: Literal["pydantic"]
    model: Reference


class ExpectedCall(_Strict):
    """A tool call the run must make; ``arguments`` must be a subset of the call's arguments."""

    name: str
    arguments: dict[str, Any] | None = None


class ToolCallsCheck(_Strict):
    """The run called these tools (with these arguments), in order when ``ordered``.

    ``exact`` forbids calls not listed; ``forbid`` names tools that must not be called.
    """

    type: Literal["tool_calls"]
    calls: list[ExpectedCall] = Field(default_factory=list)
    ordered: bool = False
    exact: bool = False
    forbid: list[str] = Field(default_factory=list)


class CustomCheck(_Strict):
    """``function(outcome, **args)`` ('module:function', sync or async) decides.

    It returns a bool, or a ``(bool, reason)`` pair, or a ``CheckResult``.
    """

    type: Literal["custom"]
    function: Reference
    args: dict[str, Any] = Field(default_factory=dict)


class ExpectedSource(_Strict):
    """A document (file name) and optionally a section (a heading, or its last part)."""

    file: str
    section: str | None = None


class CitationsCheck(_Strict):
    """The answer cites the expected sources: at least one of them (``any``) or all."""

    type: Literal["citations"]
    sources: list[ExpectedSource] = Field(min_length=1)
    mode: Literal["any", "all"] = "any"


class JudgeCheck(_Strict):
    """A model grades the output against ``rubric`` and returns a structured verdict.

    ``model`` is a model string (``openai:gpt-4o``); by default the judge given to the runner
    (``keel eval --judge``), else the model under test.
    """

    type: Literal["judge"]
    rubric: str = Field(min_length=1)
    model: str | None = None


Check = Annotated[
    ExactCheck
    | ContainsCheck
    | RegexCheck
    | JsonSchemaCheck
    | PydanticCheck
    | ToolCallsCheck
    | CustomCheck
    | CitationsCheck
    | JudgeCheck,
    Field(discriminator="type"),
]


# Targets -----------------------------------------------------------------------------------


class _Target(_Strict):
    model: Reference | None = Field(
        None, description="a 'module:function' returning the Model to evaluate (else --model)"
    )


class QATarget(_Target):
    """The document-grounded agent (``DocumentQA``): retrieve, then answer with citations.

    ``docs`` is a folder or file (relative to the dataset file), or ``demo`` for the shipped
    Solar System guide.
    """

    kind: Literal["qa"]
    docs: str = "demo"
    top_k: int | None = Field(None, ge=1, le=50)


class AgentTarget(_Target):
    """The tool-calling agent loop (``Agent``) with the tools of ``tools`` ('module:name': a
    ``ToolRegistry`` or a function returning one)."""

    kind: Literal["agent"]
    tools: Reference | None = None
    system_prompt: str = ""
    max_steps: int = Field(8, ge=1)


class ModelTarget(_Target):
    """One model call per run; ``output_schema`` constrains the reply to a JSON schema."""

    kind: Literal["model"]
    system_prompt: str = ""
    output_schema: dict[str, Any] | None = None


class FunctionTarget(_Target):
    """Any system: ``function(model, case)`` ('module:function', async) returns an
    ``Outcome`` or the output text."""

    kind: Literal["function"]
    function: Reference


Target = Annotated[
    QATarget | AgentTarget | ModelTarget | FunctionTarget, Field(discriminator="kind")
]


# Cases and datasets ------------------------------------------------------------------------


class InputMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class Case(_Strict):
    """One input, what is expected of the answer, and the checks every run must pass.

    ``threshold`` is the pass rate the case must demonstrate: it passes when the lower bound of
    the pass rate's confidence interval is at least the threshold.
    """

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
    input: str | list[InputMessage] = Field(min_length=1)
    expected: str | None = Field(None, description="the expected behaviour, for humans/judges")
    checks: list[Check] = Field(min_length=1)
    runs: int | None = Field(None, ge=1, le=1000)
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    tags: list[str] = Field(default_factory=list)

    @property
    def prompt(self) -> str:
        """The text of the last user message (the question), for reports and judges."""
        if isinstance(self.input, str):
            return self.input
        users = [m.content for m in self.input if m.role == "user"]
        return users[-1] if users else self.input[-1].content


class Defaults(_Strict):
    """Settings every case inherits unless it sets its own."""

    runs: int = Field(5, ge=1, le=1000)
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    pass_k: int = Field(3, ge=1, description="k of the pass^k figure")
    temperature: float | None = Field(
        None, ge=0.0, le=2.0, description="sampling temperature for every run (None: the model's)"
    )


class Dataset(_Strict):
    """A named set of cases for one target."""

    name: str = Field(min_length=1)
    description: str = ""
    target: Target
    defaults: Defaults = Field(default_factory=Defaults)
    cases: list[Case] = Field(min_length=1)
    path: Path | None = Field(None, exclude=True, description="the file it was loaded from")

    @model_validator(mode="after")
    def _unique_ids(self) -> Dataset:
        seen: set[str] = set()
        for case in self.cases:
            if case.id in seen:
                raise ValueError(f"two cases have the id {case.id!r}")
            seen.add(case.id)
        return self

    def runs_of(self, case: Case) -> int:
        return case.runs if case.runs is not None else self.defaults.runs

    def threshold_of(self, case: Case) -> float:
        return case.threshold if case.threshold is not None else self.defaults.threshold

    def base_dir(self) -> Path:
        return self.path.parent if self.path is not None else Path.cwd()


# Loading -----------------------------------------------------------------------------------


def resolve_reference(reference: str, *, what: str = "object") -> Any:
    """The object named by 'package.module:name' (dots after the colon walk attributes)."""
    module_name, _, attribute = reference.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise DatasetError(f"cannot import {what} {reference}: {e}") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise DatasetError(f"{what} {reference}: {module_name} has no {attribute}") from None
    return found


def shipped_suites() -> dict[str, Path]:
    """Eval suites that ship with Keel, by name (``keel eval demo``)."""
    return {p.stem: p for p in sorted(SUITES.glob("*.yaml"))}


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _yaml_line(text: str, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of ``loc`` in a YAML document (or of its deepest existing parent)."""
    import yaml

    try:
        node: Any = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _first_error(error: ValidationError) -> tuple[tuple[int | str, ...], str]:
    # Of a union's failed members, the deepest error says most about what is wrong.
    first = max(error.errors(), key=lambda e: len(e["loc"]))
    # A union adds the member it tried to the location (``checks.0.regex.pattern``); drop it so
    # the location is the path in the file.
    loc: list[int | str] = []
    previous: int | str | None = None
    for part in first["loc"]:
        at_union = isinstance(previous, int) or previous in ("target", "input")
        previous = part
        if isinstance(part, str) and part in _TAGS and at_union:
            previous = None
            continue
        loc.append(part)
    return tuple(loc), first["msg"].removeprefix("Value error, ")


_TAGS = frozenset(
    (
        *("exact", "contains", "regex", "json_schema", "pydantic", "tool_calls", "custom"),
        *("citations", "judge", "qa", "agent", "model", "function", "str", "list[InputMessage]"),
    )
)


def _read_yaml(path: Path, text: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise MissingDependencyError("pyyaml", "evals", feature="YAML eval datasets") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise DatasetError(f"{path}:{line}: not valid YAML: {e.problem}") from None
    except yaml.YAMLError as e:
        raise DatasetError(f"{path}: not valid YAML: {e}") from None


def load_dataset(source: str | Path) -> Dataset:
    """Load and validate a dataset: a ``.yaml``/``.yml``/``.json`` file, a ``.py`` file that
    defines ``dataset``, a 'module:name' reference, or the name of a shipped suite (``demo``)."""
    text_source = str(source)
    path = Path(source)
    if not path.exists() and text_source in shipped_suites():
        path = shipped_suites()[text_source]
    elif not path.exists() and _REFERENCE.match(text_source):
        found = resolve_reference(text_source, what="dataset")
        return _python_dataset(found, text_source)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    if path.suffix == ".py":
        return _load_python_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read dataset {path}: {e}") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: line {e.lineno}: not valid JSON: {e.msg}") from None
    elif path.suffix in (".yaml", ".yml"):
        data = _read_yaml(path, text)
    else:
        raise DatasetError(f"{path}: a dataset is a .yaml, .yml, .json or .py file")
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: a dataset is a mapping with name, target and cases")
    try:
        dataset = Dataset.model_validate(data)
    except ValidationError as e:
        loc, message = _first_error(e)
        line = _yaml_line(text, loc) if path.suffix != ".json" else None
        at = f" (line {line})" if line is not None else ""
        raise DatasetError(f"{path}: {_where(loc)}{at}: {message}") from None
    return dataset.model_copy(update={"path": path.resolve()})


def _python_dataset(found: Any, where: str) -> Dataset:
    if callable(found) and not isinstance(found, Dataset):
        found = found()
    if not isinstance(found, Dataset):
        raise DatasetError(f"{where} is not a keel.evals.Dataset")
    return found


def _load_python_file(path: Path) -> Dataset:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_keel_dataset_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise DatasetError(f"cannot load dataset module {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ValidationError as e:
        loc, message = _first_error(e)
        raise DatasetError(f"{path}: {_where(loc)}: {message}") from None
    found = getattr(module, "dataset", None)
    if found is None:
        raise DatasetError(f"{path}: the module defines no 'dataset'")
    dataset = _python_dataset(found, str(path))
    return dataset if dataset.path is not None else dataset.model_copy(update={"path": path})
