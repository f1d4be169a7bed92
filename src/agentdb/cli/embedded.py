"""``agentdb embedded status|stop``: the embedded PostgreSQL server."""

from __future__ import annotations

from agentdb.cli._common import JsonOpt, new_group, out, print_json, state

app = new_group(help="The embedded PostgreSQL server (used when DATABASE_URL is not set).", no_args_is_help=True)


@app.command("status")
def embedded_status(as_json: JsonOpt = False) -> None:
    """Show whether the embedded server runs, where, and its URL."""
    from agentdb import embedded
    result = embedded.status(state.data_dir)
    if as_json:
        print_json(result.as_dict())
        return
    if not result.initialized:
        out.print(f"no embedded server yet (one is created on first use)\ndata {result.data_dir}", markup=False)
    elif result.running:
        out.print(f"running: PostgreSQL {result.version}, pid {result.pid}\ndata {result.data_dir}\nurl {result.url}",
                  markup=False)
    else:
        out.print(f"stopped: PostgreSQL {result.version}\ndata {result.data_dir}", markup=False)


@app.command("stop")
def embedded_stop() -> None:
    """Stop the embedded server (it starts again on the next command that needs it)."""
    from agentdb import embedded
    stopped = embedded.stop(state.data_dir)
    out.print("stopped" if stopped else "not running")


