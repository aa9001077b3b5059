"""The checks of an agent's problem commands that need the tickets: `#problem` on an
incident and naming a problem ticket (not one merged away), the record (`#root-cause`,
`#workaround`, `#known-error`) on a problem ticket, a known error only with a
workaround, and `#merge` only between tickets of the same side (problem or not).

Pure: the agent stage and `maildesk tickets ...` hand in what they found, so that a
mail and the command line refuse the same things in the same words.
"""
from __future__ import annotations

from .commands import Plan

RECORD_FIELDS = ("root_cause", "workaround", "known_error")


def problem_errors(asked: Plan, ref: str, type_: str, workaround: str | None,
                   target: tuple[str, str] | None, merged_into: str | None = None,
                   merge: tuple[str, str] | None = None) -> list[str]:
    """What is wrong with the plan's problem commands for the ticket ref of that type and
    workaround; target: (ref, type) of the ticket `#problem REF` names, None when there is
    no such ticket (or the plan names none); merged_into: where that ticket was merged;
    merge: (ref, type) of the ticket `#merge` names, found."""
    errors = []
    kind = str(asked.changes.get("type", type_))
    if asked.problem is not None:
        if kind == "problem":
            errors.append(f"#problem: {ref} is a problem ticket; #problem links an "
                          "incident to one")
        elif asked.problem in ("new", "none"):
            pass
        elif target is None:
            errors.append(f"#problem {asked.problem}: no such ticket")
        elif target[1] != "problem":
            errors.append(f"#problem {target[0]}: it is a ticket of type {target[1]}, not a "
                          "problem (make it one with #type problem)")
        elif merged_into is not None:
            errors.append(f"#problem {target[0]}: it was merged into {merged_into}; "
                          f"#problem {merged_into} links to where it went")
    if merge is not None and (kind == "problem") != (merge[1] == "problem"):
        # a problem's record and incidents would end on a customer's ticket, or a
        # customer in the problem's CC, hearing what the desk writes about its cause
        errors.append(f"#merge {merge[0]}: " + (
            f"{ref} is a problem and {merge[0]} is not; a problem merges only into a problem"
            if kind == "problem" else
            f"{merge[0]} is a problem; link {ref} to it with #problem {merge[0]} instead"))
    if kind != "problem":
        for name in RECORD_FIELDS:
            if name in asked.changes:
                errors.append(f"#{name.replace('_', '-')}: {ref} is no problem ticket (the "
                              "record belongs on the problem: #problem new makes one)")
    if asked.changes.get("known_error") and not asked.changes.get("workaround", workaround):
        errors.append("#known-error: a known error needs its workaround (#workaround TEXT)")
    return errors
