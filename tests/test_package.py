"""The package surface: explicit exports, and an import that stays cheap."""

import json
import subprocess
import sys

import keel

HEAVY = ("numpy", "xllamacpp", "onnxruntime", "faiss", "tokenizers", "torch", "opentelemetry.sdk")


def test_all_names_resolve_and_are_sorted() -> None:
    assert keel.__all__ == sorted(keel.__all__)
    for name in keel.__all__:
        assert getattr(keel, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        keel.DoesNotExist  # noqa: B018
    except AttributeError as e:
        assert "DoesNotExist" in str(e)
    else:
        raise AssertionError("keel.DoesNotExist should not exist")


def test_import_keel_loads_no_model_runtime_or_numpy() -> None:
    code = "import sys, json, keel; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY or m.startswith("opentelemetry.sdk")]
    assert heavy == []


def test_subpackages_that_define_contracts_stay_light() -> None:
    code = (
        "import sys, json, keel.llm, keel.tools, keel.graph, keel.memory, keel.observe; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    loaded = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    assert [m for m in loaded if m.split(".")[0] in HEAVY[:-1]] == []
