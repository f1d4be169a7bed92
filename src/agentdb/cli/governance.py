"""``agentdb check``: the CLI of :mod:`agentdb.governance`."""

from __future__ import annotations

import textwrap
from typing import Annotated

import typer

from agentdb.cli._common import JsonOpt, err, new_group, out, print_json

app = new_group()


@app.command("check")
def check_(
    no_squawk: Annotated[bool, typer.Option("--no-squawk", help="Skip the squawk SQL linter.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Governance checks over the migration files (no database): names, ids, head, docs, downgrades, squawk."""

    from agentdb import governance
    report = governance.check(squawk=not no_squawk)
    if as_json:
        print_json(report.as_dict())
    else:
        for violation in report.violations:
            err.print(f"error: {violation}", markup=False)
        for exemption in report.exemptions:  # the reason is prose: wrapped under its heading, not one long line
            out.print(f"note: {exemption.filename} may break squawk {exemption.rule} ({exemption.occurrences}x):",
                      markup=False)
            out.print(textwrap.fill(exemption.reason, width=min(out.width, 100), initial_indent="    ",
                                    subsequent_indent="    "), markup=False)
        for skipped in report.skipped:
            out.print(f"note: {skipped}", markup=False)
        for unknown in report.unknown:
            err.print(f"not checked: {unknown}", markup=False)
        (out if report.ok else err).print(report.summary(), markup=False)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


