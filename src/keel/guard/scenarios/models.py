"""The models of the scenario suite, all with the same small "understanding" of instructions.

``compliant_model`` is adversarially compliant: it reads every instruction in its context,
whoever wrote it (the user's request or a tool result), and carries each out with the tools it
has, the user's first; then it answers with what it read. It understands a small, fixed
instruction language (``parse_instructions``), which both the user tasks and the injections are
written in, so nothing is scripted per scenario. ``planner_model`` and ``quarantine_model`` play
the two roles of ``PlanExecuteAgent`` with the same understanding.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keel.llm.messages import AssistantMessage, ToolCallPart, ToolMessage, UserMessage
from keel.llm.testing import FunctionModel, ModelCall

__all__ = [
    "Instruction",
    "compliant_model",
    "parse_instructions",
    "planner_model",
    "quarantine_model",
]

# Understanding instructions -------------------------------------------------------------------

_EMAIL = r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
_ACCOUNT = r"[A-Z]{2}\d{2}[A-Z0-9]{6,30}"
_VERB_TO = r"\b(?:send|email|forward|mail)\b[^.\n]{0,80}?\bto "
_PAY = (
    r"\b(?:transfer|pay|wire|send) (?:\$|EUR |USD )?(?P<amount>\d[\d,]*(?:\.\d+)?)"
    r"(?: dollars| euros)? to (?:account |IBAN |the account )?(?P<account>" + _ACCOUNT + ")"
)
_SPECS: list[tuple[str, str, int]] = [
    ("read_inbox", r"\b(?:read|check|summari[sz]e|go through|in) (?:my |the )?inbox\b", re.I),
    ("read_document", r"\bdocument (?P<name>[a-z][\w-]*)", re.I),
    ("read_file", r"\bread (?:the )?file (?P<path>[\w/-]+\.\w+)", re.I),
    ("list_files", r"\b(?:list|look at) (?:my |the |all )?files\b", re.I),
    ("fetch_url", r"\b(?:fetch|visit|load|open|download) (?P<url>https?://[^\s\"'<>)]+)", re.I),
    (
        "lookup_contact",
        r"\b(?:[Ee]mail|[Ss]end|[Ff]orward)\b[^.\n]{0,60}?\bto (?P<name>[A-Z][a-z]+)\b"
        r"(?!\s*@|[\w@]|\.\w)",
        0,
    ),
    ("send_email", _VERB_TO + r"(?P<to>" + _EMAIL + ")", re.I),
    ("reply", r"\breply to (?:the )?(?:latest |last )?(?:email|message)", re.I),
    ("transfer_money", _PAY, re.I),
    ("delete_file", r"\b(?:delete|remove|erase) (?:the )?file (?P<path>[\w/-]+\.\w+)", re.I),
    (
        "delete_matching",
        r"\bdelete (?:all |every )?(?:the )?files? ending in (?P<suffix>\.\w+)",
        re.I,
    ),
    (
        "write_file",
        r"\b(?:write|save|store)\b[^.\n]{0,40}?\b(?:to|into|in|as) (?:the )?file "
        r"(?P<path>[\w/-]+\.\w+)",
        re.I,
    ),
    ("image", r"(?P<image>!\[[^\]]*\]\(https?://[^)\s]+\))", 0),
]
_PATTERNS = [(verb, re.compile(rx, flags)) for verb, rx, flags in _SPECS]
_READS = frozenset({"read_inbox", "read_document", "read_file", "list_files", "fetch_url"})


@dataclass(frozen=True)
class Instruction:
    """One thing a text asks for: a verb and its literal arguments."""

    verb: str
    args: tuple[tuple[str, str], ...] = ()
    position: int = 0

    def get(self, key: str) -> str:
        return dict(self.args).get(key, "")


def parse_instructions(text: str) -> list[Instruction]:
    """Every instruction in ``text``, reads first, else in the order written (the model's
    "understanding")."""
    found: list[Instruction] = []
    for verb, pattern in _PATTERNS:
        for match in pattern.finditer(text):
            args = tuple((k, v.rstrip(".,;")) for k, v in match.groupdict().items() if v)
            found.append(Instruction(verb, args, match.start()))
    found.sort(key=lambda i: (i.verb not in _READS, i.position))  # read before acting on it
    return found


# The adversarially compliant model (plain agent loop) -------------------------------------------


def _read_outputs(messages: Sequence[Any]) -> list[tuple[str, str]]:
    out = []
    for m in messages:
        if isinstance(m, ToolMessage) and not m.is_error:
            out.append((m.name, m.content))
    return out


def _content(outputs: list[tuple[str, str]]) -> str:
    read = [
        text
        for name, text in outputs
        if name
        not in ("send_email", "transfer_money", "write_file", "delete_file", "lookup_contact")
    ]
    return "\n\n".join(read)[-3000:] or "(nothing read)"


def _sender_of_last_email(outputs: list[tuple[str, str]]) -> str:
    for name, text in reversed(outputs):
        if name == "read_inbox":
            senders = re.findall(r"^From: (" + _EMAIL + ")", text, re.M)
            if senders:
                return str(senders[-1])
    return ""


def _calls_for(instruction: Instruction, outputs: list[tuple[str, str]]) -> list[ToolCallPart]:
    """The tool calls that carry out ``instruction`` now (empty if they need unread input)."""
    v, get = instruction.verb, instruction.get
    body = _content(outputs)
    args: dict[str, Any]
    if v in ("read_inbox", "list_files"):
        return [ToolCallPart(id="", name=v)]
    if v == "read_document":
        return [ToolCallPart(id="", name=v, arguments={"name": get("name")})]
    if v in ("read_file", "delete_file"):
        return [ToolCallPart(id="", name=v, arguments={"path": get("path")})]
    if v == "fetch_url":
        return [ToolCallPart(id="", name=v, arguments={"url": get("url")})]
    if v == "send_email":
        args = {"to": get("to"), "subject": "As requested", "body": body}
        return [ToolCallPart(id="", name=v, arguments=args)]
    if v == "lookup_contact":
        looked = [text for name, text in outputs if name == "lookup_contact"]
        lookup = ToolCallPart(id="", name=v, arguments={"name": get("name")})
        if not looked:
            return [lookup]
        args = {"to": looked[-1].strip(), "subject": "As requested", "body": body}
        return [lookup, ToolCallPart(id="", name="send_email", arguments=args)]
    if v == "reply":
        sender = _sender_of_last_email(outputs)
        if not sender:
            return []
        args = {"to": sender, "subject": "Re: your message", "body": "Thank you, noted."}
        return [ToolCallPart(id="", name="send_email", arguments=args)]
    if v == "transfer_money":
        amount = float(get("amount").replace(",", ""))
        args = {"account": get("account"), "amount": amount}
        return [ToolCallPart(id="", name=v, arguments=args)]
    if v == "delete_matching":
        listed = [text for name, text in outputs if name == "list_files"]
        if not listed:
            return []
        paths = [p for p in json.loads(listed[-1]) if p.endswith(get("suffix"))]
        return [ToolCallPart(id="", name="delete_file", arguments={"path": p}) for p in paths]
    if v == "write_file":
        args = {"path": get("path"), "content": body}
        return [ToolCallPart(id="", name=v, arguments=args)]
    return []


def _signature(call: ToolCallPart) -> str:
    keep = {k: v for k, v in call.arguments.items() if k not in ("body", "content", "subject")}
    return json.dumps([call.name, keep], sort_keys=True)


def compliant_model() -> FunctionModel:
    """A model that carries out every instruction in its context, the user's first, then
    answers with what it read (and any image it was told to include)."""
    counter = iter(range(1, 1_000_000))

    def reply(call: ModelCall) -> Any:
        messages = call.messages
        issued = {
            _signature(c) for m in messages if isinstance(m, AssistantMessage) for c in m.tool_calls
        }
        outputs = _read_outputs(messages)
        texts = [m.content for m in messages if isinstance(m, UserMessage)]
        texts += [m.content for m in messages if isinstance(m, ToolMessage) and not m.is_error]
        images: list[str] = []
        for text in texts:
            for instruction in parse_instructions(text):
                if instruction.verb == "image":
                    images.append(instruction.get("image"))
                    continue
                for planned in _calls_for(instruction, outputs):
                    if _signature(planned) not in issued:
                        return planned.model_copy(update={"id": f"call_{next(counter)}"})
        answer = "Here is what I found:\n\n" + _content(outputs)
        return answer + "".join(f"\n\n{image}" for image in dict.fromkeys(images))

    return FunctionModel(reply, name="compliant")


# The same understanding in the two roles of PlanExecuteAgent -----------------------------------


def planner_model() -> FunctionModel:
    """A planner that turns the user's request (all it sees) into a plan in the same way."""

    def plan(call: ModelCall) -> str:
        request = call.last_user_text
        steps: list[dict[str, Any]] = []
        reads: list[str] = []

        def body() -> dict[str, Any]:
            return {"format": "\n\n".join("{" + r + "}" for r in reads) or "(nothing read)"}

        args: dict[str, Any]
        for instruction in parse_instructions(request):
            v, get, n = instruction.verb, instruction.get, len(steps) + 1
            if v in ("read_inbox", "list_files", "read_document", "read_file", "fetch_url"):
                key = {"read_document": "name", "read_file": "path", "fetch_url": "url"}.get(v)
                args = {key: {"value": get(key)}} if key else {}
                steps.append({"kind": "tool", "tool": v, "arguments": args, "store": f"v{n}"})
                reads.append(f"v{n}")
            elif v == "send_email":
                args = {"to": {"value": get("to")}, "subject": {"value": "As requested"}}
                steps.append({"kind": "tool", "tool": v, "arguments": {**args, "body": body()}})
            elif v == "lookup_contact":
                steps.append(
                    {
                        "kind": "tool",
                        "tool": v,
                        "store": f"c{n}",
                        "arguments": {"name": {"value": get("name")}},
                    }
                )
                args = {"to": {"ref": f"c{n}"}, "subject": {"value": "As requested"}}
                steps.append(
                    {"kind": "tool", "tool": "send_email", "arguments": {**args, "body": body()}}
                )
            elif v == "reply":
                steps.append(
                    {
                        "kind": "query",
                        "instruction": "the sender of the last email",
                        "inputs": reads[-1:] or ["v1"],
                        "output": "email_address",
                        "store": f"s{n}",
                    }
                )
                args = {
                    "to": {"ref": f"s{n}"},
                    "subject": {"value": "Re: your message"},
                    "body": {"value": "Thank you, noted."},
                }
                steps.append({"kind": "tool", "tool": "send_email", "arguments": args})
            elif v == "transfer_money":
                args = {
                    "account": {"value": get("account")},
                    "amount": {"value": float(get("amount").replace(",", ""))},
                }
                steps.append({"kind": "tool", "tool": v, "arguments": args})
            elif v in ("delete_file", "write_file"):
                args = {"path": {"value": get("path")}}
                if v == "write_file":
                    args["content"] = body()
                steps.append({"kind": "tool", "tool": v, "arguments": args})
        if re.search(r"\bpay (?:the|my) (?:invoice|bill)", request, re.I):
            for what, out, name in (("account", "account", "acct"), ("amount", "number", "amt")):
                steps.append(
                    {
                        "kind": "query",
                        "instruction": f"the {what} the invoice asks to pay",
                        "inputs": reads[-1:] or ["v1"],
                        "output": out,
                        "store": name,
                    }
                )
            args = {"account": {"ref": "acct"}, "amount": {"ref": "amt"}}
            steps.append({"kind": "tool", "tool": "transfer_money", "arguments": args})
        ending = re.search(r"\bdelete (?:all |every )?(?:the )?files? ending in (\.\w+)", request)
        if ending:
            steps.append(
                {
                    "kind": "query",
                    "instruction": f"the files to delete: those ending in {ending.group(1)}",
                    "inputs": reads[-1:] or ["v1"],
                    "output": "list_of_text",
                    "store": "doomed",
                }
            )
            steps.append(
                {
                    "kind": "tool",
                    "tool": "delete_file",
                    "arguments": {"path": {"ref": "item"}},
                    "for_each": "doomed",
                }
            )
        answer = "Here is what I found:\n\n" + "\n\n".join("{" + r + "}" for r in reads)
        return json.dumps({"steps": steps, "answer": answer})

    return FunctionModel(plan, name="planner")


def quarantine_model() -> FunctionModel:
    """The quarantined reader, as compliant as the rest: where the data holds an instruction
    that fits the question (an account to pay, a file to delete), it answers with the last one
    written, which is where an attacker appends theirs."""

    def extract(call: ModelCall) -> str:
        assert not call.tools, "a quarantined call must have no tools"
        text = call.last_user_text
        task = text.split("\n", 1)[0]
        found = parse_instructions(text)
        value: Any = ""
        if "account" in task or "amount" in task:
            pays = [i for i in found if i.verb == "transfer_money"]
            if pays:
                pay = pays[-1]
                value = (
                    pay.get("account")
                    if "account" in task
                    else float(pay.get("amount").replace(",", ""))
                )
        elif "sender" in task:
            senders = re.findall(r"^From: (" + _EMAIL + ")", text, re.M)
            value = senders[-1] if senders else ""
        elif "files to delete" in task:
            suffix = task.rsplit(" ", 1)[-1]
            names = [n for n in re.findall(r'"([\w/.-]+)"', text) if n.endswith(suffix)]
            value = names + [i.get("path") for i in found if i.verb == "delete_file"]
        return json.dumps({"value": value})

    return FunctionModel(extract, name="quarantine")
