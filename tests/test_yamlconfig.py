"""The shared YAML config loader (mico_chat.yamlconfig) on a small config of its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pytest

from mico_chat.errors import ConfigError
from mico_chat.yamlconfig import (
    REQUIRED,
    YamlConfig,
    build_config,
    coerce,
    missing_values,
    parse_override,
    read_yaml,
)


class ToyConfigError(ConfigError):
    pass


@dataclass
class Part:
    name: str = REQUIRED
    weight: float = 1.0
    tags: list[str] = field(default_factory=list)


@dataclass
class Job:
    yaml_shorthand: ClassVar[str] = "kind"

    kind: Literal["fit", "eval"] = "fit"
    steps: int = 10
    limit: int | None = None


@dataclass
class Toy(YamlConfig):
    job: Job = field(default_factory=Job)
    parts: list[Part] = field(default_factory=list)
    out: str = REQUIRED
    fast: bool = False
    mode: bool | str = "auto"
    extra: dict = field(default_factory=dict)


def build(data: dict, overrides: tuple[str, ...] = (), **kwargs) -> Toy:
    return build_config(Toy, data, overrides, source="toy.yaml", error=ToyConfigError, **kwargs)


@pytest.mark.parametrize(
    "value, hint, expected",
    [
        (3, int, 3),
        (3, float, 3.0),
        ("1e-4", float, 1e-4),  # YAML 1.1 reads 1e-4 as a string
        (True, bool, True),
        (None, int | None, None),
        (5, int | None, 5),
        (False, bool | str, False),
        ("auto", bool | str, "auto"),
        ("a.jsonl", list[str], ["a.jsonl"]),  # one value where a list is expected
        ([1, 2], list[float], [1.0, 2.0]),
        ({"k": 1}, dict, {"k": 1}),
        ("eval", Literal["fit", "eval"], "eval"),
        ({"x": [1]}, Any, {"x": [1]}),
        (REQUIRED, int, REQUIRED),  # reported later, once overrides had their chance
    ],
)
def test_coerce_accepts_and_converts_only_without_loss(value, hint, expected):
    out = coerce(value, hint, "k")
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(
    "value, hint, message",
    [
        ("ten", int, "a.b must be an integer, got 'ten'"),
        (True, int, "a.b must be an integer, got True"),  # bool is an int in Python, not here
        (2.5, int, "a.b must be an integer"),
        (1, bool, "a.b must be true or false, got 1"),
        ("x", float, "a.b must be a number"),
        (3, str, "a.b must be a string"),
        (None, int, "a.b must be an integer, got None"),
        (None, int | str, "a.b may not be null"),
        ([1, "x"], list[int], r"a.b.1 must be an integer, got 'x'"),
        (5, list[int], "a.b must be a list"),
        ([1], dict, "a.b must be a mapping"),
        ("train", Literal["fit", "eval"], "a.b must be one of fit, eval, got 'train'"),
        (True, Literal[1, 2], "a.b must be one of 1, 2, got True"),
        (1.5, int | str, r"a.b: 1.5 fits none of"),
    ],
)
def test_coerce_rejects_wrong_types_naming_the_key(value, hint, message):
    with pytest.raises(ConfigError, match=message):
        coerce(value, hint, "a.b")


def test_nested_dataclasses_lists_of_them_and_the_shorthand_are_built():
    cfg = build({"job": "eval", "parts": [{"name": "a", "weight": 2}, {"name": "b", "tags": "x"}], "out": "o"})
    assert cfg.job == Job(kind="eval") and cfg.out == "o"
    assert cfg.parts == [Part("a", 2.0, []), Part("b", 1.0, ["x"])] and isinstance(cfg.parts[0].weight, float)
    assert build(cfg.to_dict()) == cfg  # to_dict round-trips
    assert build(cfg.to_dict(), ("parts={name: c}",)).parts == [Part("c")]  # one mapping = a one-item list
    assert "job:\n  kind: eval\n" in cfg.to_yaml()


def test_overrides_set_nested_values_list_items_and_shorthand_sections():
    data = {"job": "fit", "parts": [{"name": "a"}, {"name": "b"}], "out": "o"}
    cfg = build(
        data,
        (
            "job.steps=20",  # into the `job: fit` shorthand
            "parts.1.weight=0.5",
            "parts.0.tags=[x, y]",
            "extra.deep.key=1",  # a new dict path is created
            "fast=true",
            "mode=false",
        ),
    )
    assert cfg.job == Job(kind="fit", steps=20)
    assert cfg.parts == [Part("a", tags=["x", "y"]), Part("b", 0.5)]
    assert cfg.extra == {"deep": {"key": 1}} and cfg.fast is True and cfg.mode is False
    assert data["parts"][1] == {"name": "b"}  # the caller's mapping is left alone
    # the shorthand may be set whole, then refined
    assert build(data, ("job=eval", "job.limit=3")).job == Job(kind="eval", limit=3)
    assert build(data, ("job.limit=null",)).job.limit is None


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("parts.5.weight=1",), r"toy.yaml: cannot set parts.5.weight: parts has no item 5 \(it has 1\)"),
        (("out.x=1",), "toy.yaml: cannot set out.x: out is not a section"),
        (("job.stepz=3",), r"toy.yaml: unknown config key\(s\) job.stepz; known in job: kind, limit, steps"),
        (("parts.0.weight=heavy",), "toy.yaml: parts.0.weight must be a number, got 'heavy'"),
        (("job=train",), "toy.yaml: job.kind must be one of fit, eval, got 'train'"),
        (("fast",), "toy.yaml: override 'fast' must look like key=value"),
        (("fast=[1",), "not valid YAML"),
    ],
)
def test_bad_overrides_name_the_file_and_the_key(overrides, message):
    with pytest.raises(ToyConfigError, match=message):
        build({"parts": [{"name": "a"}], "out": "o"}, overrides)


def test_unknown_keys_in_the_file_name_the_file_and_the_key(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text("out: o\nparts:\n  - {name: a, wieght: 2}\nspeed: 3\n")
    data = read_yaml(path, ToyConfigError)
    with pytest.raises(ToyConfigError, match=rf"^{path}: unknown config key\(s\) speed; known in the top level: "):
        build_config(Toy, data, source=str(path), error=ToyConfigError)
    del data["speed"]
    with pytest.raises(ToyConfigError, match=r"unknown config key\(s\) parts.0.wieght; known in parts.0: name, "):
        build_config(Toy, data, source=str(path), error=ToyConfigError)


def test_required_values_are_listed_until_set():
    data = {"parts": [{"weight": 2}, {"name": "b", "tags": [REQUIRED]}], "extra": {"token": REQUIRED}}
    with pytest.raises(ToyConfigError) as err:
        build(data)
    assert str(err.value) == (
        "toy.yaml: required value(s) not set: parts.0.name, parts.1.tags, out, extra.token "
        "(add parts.0.name=... parts.1.tags=... out=... extra.token=... to the command)"
    )
    cfg = build(data, ("parts.0.name=a", "parts.1.tags=x", "out=o", "extra.token=t"))
    assert missing_values(cfg) == [] and cfg.parts[1].tags == ["x"]


def test_validate_runs_last_with_the_source():
    seen = []
    build({"out": "o"}, validate=lambda cfg, source: seen.append((cfg.out, source)))
    assert seen == [("o", "toy.yaml")]
    with pytest.raises(ToyConfigError, match="required"):  # never validated with a ??? left
        build({}, validate=lambda cfg, source: pytest.fail("validated an incomplete config"))


def test_parse_override_and_read_yaml(tmp_path):
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("a.0.b=1e-4") == ("a.0.b", "1e-4")  # YAML 1.1; a float field converts it
    assert parse_override(" a = null") == ("a", None)
    assert parse_override("a=") == ("a", "")
    for bad in ("a..b=1", "=1", "a-b=1"):
        with pytest.raises(ToyConfigError, match="is not a dotted config key"):
            parse_override(bad, ToyConfigError)
    with pytest.raises(ToyConfigError, match="no such config file"):
        read_yaml(tmp_path / "none.yaml", ToyConfigError)
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ToyConfigError, match="list.yaml: the config must be a mapping of sections, got list"):
        read_yaml(tmp_path / "list.yaml", ToyConfigError)
    (tmp_path / "bad.yaml").write_text("a: [1\n")
    with pytest.raises(ToyConfigError, match="bad.yaml: not valid YAML"):
        read_yaml(tmp_path / "bad.yaml", ToyConfigError)
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    (tmp_path / "keys.yaml").write_text("2: x\noff: y\n")
    assert read_yaml(tmp_path / "empty.yaml") == {}
    assert read_yaml(tmp_path / "keys.yaml") == {"2": "x", "False": "y"}
