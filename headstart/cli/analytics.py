"""``headstart funnel`` and ``headstart segments``.

With a server running on the data directory, a command calls its REST API (``/api/funnels``,
``/api/friction``, ``/api/segments``) with the admin key, because the server has the
warehouse file open. Otherwise it catches up the processor, syncs ``analytics.duckdb`` and runs
the analysis in this process. Both paths return the same JSON, which ``--json`` prints as is
and the default view renders as tables.
"""

from __future__ import annotations

import typer

from headstart.cli.funnel import funnel_command
from headstart.cli.segments import segments_command


def register(app: typer.Typer) -> None:
    """Add the funnel and segments commands to ``app``."""
    app.command("funnel")(funnel_command)
    app.command("segments")(segments_command)
