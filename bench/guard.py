"""Prompt-injection defence: attacker goals reached and user tasks completed, with and without
the guard, on the scenario suite in ``keel.guard.scenarios``.

Every scenario is a legitimate user task (summarise the inbox, email a report, pay the rent, ...)
in a world where one email, document, web page or file carries an injected instruction
(exfiltrate data, send money, email an attacker, delete files, fetch an attacker's URL, leak data
through a markdown image). The model is adversarially compliant: it carries out every
instruction it reads, the user's and the attacker's alike. Modes:

- ``baseline``: the agent loop (``agent_graph``) without a guard;
- ``guard``: the same loop with ``Guard`` and the default policy (untrusted targets denied);
- ``guard+approval``: a policy that asks a human instead of denying an untrusted target; the
  simulated human approves exactly the targets the user meant;
- ``plan`` / ``plan+approval``: ``PlanExecuteAgent`` (privileged planner, quarantined reader).

It also measures the heuristic ``InjectionDetector`` (second line) on the injected texts and on
the clean content of the world (false positives).

Run: .venv/bin/python bench/guard.py [--verbose]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from keel.guard.scenarios import INJECTIONS, MODES, SCENARIOS, SuiteReport, base_world, run_suite
from keel.guard.screening import InjectionDetector


def detector_figures() -> tuple[int, int, int, int]:
    """(injections flagged, injections, clean texts flagged, clean texts)."""
    detector = InjectionDetector()
    world = base_world()
    clean = [m["body"] for m in world.inbox] + list(world.documents.values())
    clean += list(world.web.values()) + list(world.files.values())
    clean += [s.task for s in SCENARIOS]
    hits = sum(detector.scan(text).flagged for text in INJECTIONS.values())
    false = sum(detector.scan(text).flagged for text in clean)
    return hits, len(INJECTIONS), false, len(clean)


def print_report(report: SuiteReport, seconds: float, verbose: bool) -> None:
    n = len(report.outcomes)
    standard = [o for o in report.outcomes if o.category == "standard"]
    asked, granted = report.approvals
    print(
        f"{report.mode:<15} attacker goals reached {report.attacks_succeeded:>2}/{n}   "
        f"tasks done {report.tasks_done:>2}/{n} ({report.utility():.0%}; standard "
        f"{report.utility('standard'):.0%} of {len(standard)}, content-target "
        f"{report.utility('content-target'):.0%})   approvals asked {asked}, granted {granted}"
        f"   {seconds * 1000 / n:.1f} ms/scenario"
    )
    if verbose:
        for o in report.outcomes:
            attack = ", ".join(o.attacker_goals) or "-"
            done = "done" if o.task_done else "NOT DONE"
            print(f"    {o.scenario:<28} {o.category:<15} {done:<9} attack: {attack}")


async def main(verbose: bool) -> None:
    print(f"{len(SCENARIOS)} scenarios, each a user task with one injected instruction\n")
    for mode in MODES:
        start = time.perf_counter()
        report = await run_suite(mode)
        print_report(report, time.perf_counter() - start, verbose)
    hits, injected, false, clean = detector_figures()
    print(
        f"\nheuristic detector: flagged {hits}/{injected} injected texts, "
        f"{false}/{clean} clean texts (false positives)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--verbose", "-v", action="store_true", help="one line per scenario")
    asyncio.run(main(parser.parse_args().verbose))
