"""The ``python`` built-in tool, running code in the real bubblewrap sandbox."""

from keel.llm import ToolCallPart
from keel.sandbox import BubblewrapSandbox, Limits
from keel.tools import Effect
from keel.tools.builtin import python_tools


def call(**arguments: object) -> ToolCallPart:
    return ToolCallPart(id="1", name="python", arguments=arguments)


async def test_python_runs_code_in_the_sandbox_and_reports_everything() -> None:
    tools = python_tools(
        BubblewrapSandbox(), limits=Limits(wall_time_s=2, cpu_time_s=2), max_output_chars=200
    )
    assert tools.get("python").effects == {Effect.READ_ONLY}
    assert list(tools.get("python").parameters["properties"]) == ["code", "files"]

    ok = await tools.call(
        call(
            code="data = open('in.txt').read()\nprint(data.upper())\n"
            "open('out.txt', 'w').write(data[::-1])",
            files={"in.txt": "keel"},
        )
    )
    assert ok.ok, ok.error
    assert ok.value == {
        "exit_code": 0,
        "stdout": "KEEL\n",
        "stderr": "",
        "files_out": {"out.txt": "leek"},
    }

    crashed = await tools.call(call(code="print('x' * 1000)\nraise SystemExit('boom')"))
    assert crashed.ok and crashed.value["exit_code"] == 1
    assert crashed.value["stderr"] == "boom\n"
    assert crashed.value["stdout"].endswith("[cut: 801 more characters]")

    looping = await tools.call(call(code="while True:\n    pass"))
    assert looping.ok and looping.value["exit_code"] == 124
    assert "time limit exceeded" in looping.value["limit"]

    bad_name = await tools.call(call(code="print(1)", files={"../escape.txt": "x"}))
    assert bad_name.error is not None and "invalid workspace file name" in bad_name.error["message"]
