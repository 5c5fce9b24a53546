"""``headstart demo``: serve a real Stack Exchange community, and export it as NDJSON."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from headstart.cli.common import (
    DEFAULT_DATA_DIR,
    DataDirOption,
    catch_up,
    err_console,
    progress_bar,
)
from headstart.datadir import DataDir
from headstart.demo.bootstrap import SOURCE_NAME, DemoSetup, prepare_demo
from headstart.demo.dump import SITES, get_site
from headstart.demo.stackexchange import export_site, write_ndjson

SiteOption = Annotated[str, typer.Option(help=f"Stack Exchange site to use: {', '.join(SITES)}.")]

demo_app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
)


@demo_app.callback()
def demo(
    context: typer.Context,
    data_dir: DataDirOption = Path(DEFAULT_DATA_DIR),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8080,
    site: SiteOption = "martialarts",
) -> None:
    """Serve a real Stack Exchange community: plan, source "demo", one-time import, server.

    Keys are kept in DATA_DIR/demo-credentials.json (mode 0600) and printed on every start.
    HEADSTART_ADMIN_KEY, when set, is the admin key. `headstart demo export` writes the NDJSON.
    """
    if context.invoked_subcommand is not None:
        return
    from headstart.server import serve

    chosen = get_site(site)
    directory = DataDir.create(data_dir)
    with progress_bar() as bar:
        # Hidden until the import reports progress, so a second start shows no bar.
        task = bar.add_task(f"importing {chosen.title}", total=None, visible=False)
        setup = prepare_demo(
            directory,
            chosen,
            admin_key_from_environment=os.environ.get("HEADSTART_ADMIN_KEY"),
            progress=lambda n: bar.update(task, advance=n, visible=True),
        )
    catch_up(directory)
    url = f"http://{host}:{port}"
    _announce(directory, setup, url)
    serve(directory, host, port, announce=False)


@demo_app.command("export")
def export(
    out: Annotated[Path, typer.Argument(help="NDJSON file to write; - writes to stdout.")],
    site: SiteOption = "martialarts",
) -> None:
    """Write a site's dump as Segment messages, one JSON object per line.

    Load the file with `headstart import FILE`.
    """
    chosen = get_site(site)
    result = export_site(chosen)
    if str(out) == "-":
        write_ndjson(result.messages, sys.stdout.buffer)
        sys.stdout.flush()
    else:
        with out.open("wb") as handle:
            write_ndjson(result.messages, handle)
    err_console.print(
        f"wrote {len(result.messages)} messages from {chosen.host} to {out}", highlight=False
    )
    for name, count in sorted(result.stats.events.items()):
        err_console.print(f"  {name}: {count}", highlight=False)
    err_console.print(
        f"  {result.stats.bulk_reawards} badges marked bulk_reaward: true", highlight=False
    )
    for reason, count in sorted(result.stats.skipped.items()):
        err_console.print(f"  skipped {reason}: {count}", highlight=False)


def _announce(directory: DataDir, setup: DemoSetup, url: str) -> None:
    record = setup.import_record
    lines = [f"{setup.site.title} demo in {directory.root}"]
    if setup.imported_now:
        lines.append(
            f"imported {record.accepted} events ({record.duplicates} duplicates, "
            f"{record.rejected} rejected); {record.bulk_reawards} bulk re-awarded badges are "
            "left out of the milestones"
        )
    else:
        lines.append(f"import skipped: the data was imported at {record.finished_at}")
    lines += [
        f"url:       {url}",
        f'write key: {setup.write_key}  (source "{SOURCE_NAME}")',
        f"admin key: {_admin_key_text(setup)}",
        f"keys are kept in {setup.credentials_path} (mode 0600)",
        "try:",
        f'  curl -H "Authorization: Bearer {setup.admin_key or "ADMIN_KEY"}" {url}/api/report',
        f'  curl -u "{setup.write_key}:" -H "Content-Type: application/json" '
        f'-d \'{{"userId": "demo-1", "event": "Signed Up"}}\' {url}/v1/track',
        "  # the analytics commands ask this server, with the admin key:",
        f"  export HEADSTART_ADMIN_KEY={setup.admin_key or 'ADMIN_KEY'}",
        f"  {_program()} ttv -d {directory.root} --within-days 14",
    ]
    print("\n".join(lines), flush=True)


def _program() -> str:
    """Return how this program was started, e.g. .venv/bin/headstart under `make run`."""
    started = Path(sys.argv[0])
    return str(started) if started.name == "headstart" else "headstart"


def _admin_key_text(setup: DemoSetup) -> str:
    if setup.admin_key_origin == "environment":
        return "the value of HEADSTART_ADMIN_KEY"
    if setup.admin_key is None:
        return (
            "unknown: it was set from HEADSTART_ADMIN_KEY or rotated since; set "
            "HEADSTART_ADMIN_KEY, or run `headstart admin rotate-key` with this --data-dir"
        )
    return setup.admin_key
