"""``headstart``: serve, import, report, person, sources, plan and admin commands."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from headstart.cli import analytics as analytics_commands
from headstart.cli import identity as identity_commands
from headstart.cli import lifecycle as lifecycle_commands
from headstart.cli.common import (
    DEFAULT_DATA_DIR,
    DataDirOption,
    JsonOption,
    catch_up,
    console,
    err_console,
    print_json,
    progress_bar,
)
from headstart.cli.demo import demo_app
from headstart.cli.messages import messages_app
from headstart.cli.render import render_person, render_report
from headstart.cli.triggers import triggers_app
from headstart.datadir import DataDir
from headstart.errors import HeadstartError, PlanError
from headstart.ingest.files import CsvMapping
from headstart.ingest.importer import count_lines, file_digest, previous_import
from headstart.ingest.importer import import_file as run_import
from headstart.log.sqlite_log import SQLiteEventLog
from headstart.plan.load import load_plan
from headstart.sources import AdminKey, SourceRegistry
from headstart.sqlite import connect
from headstart.timeutil import SystemClock, parse_iso, to_iso

app = typer.Typer(
    help="headstart: a self-hostable user onboarding engine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
sources_app = typer.Typer(help="Manage sources and their write keys.", no_args_is_help=True)
plan_app = typer.Typer(help="Check and install onboarding plans.", no_args_is_help=True)
admin_app = typer.Typer(help="Administrative tasks.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")
app.add_typer(plan_app, name="plan")
app.add_typer(admin_app, name="admin")
app.add_typer(demo_app, name="demo")
app.add_typer(messages_app, name="messages")
app.add_typer(triggers_app, name="triggers")

DATA = Path(DEFAULT_DATA_DIR)


@app.command()
def serve(
    data_dir: DataDirOption = DATA,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8080,
    plan: Annotated[
        Path | None, typer.Option(help="Install this plan file before starting.")
    ] = None,
) -> None:
    """Run the ingest and admin API with its processor on one data directory."""
    from headstart.server import serve as run_server

    directory = DataDir.create(data_dir)
    if plan is not None:
        directory.install_plan(plan)
    run_server(directory, host, port)


@app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(help="NDJSON (one Segment message per line) or CSV.")],
    data_dir: DataDirOption = DATA,
    source: Annotated[
        str, typer.Option(help="Source name the events are logged under.")
    ] = "import",
    file_format: Annotated[
        str | None, typer.Option("--format", help="ndjson or csv; guessed from the extension.")
    ] = None,
    message_type: Annotated[
        str, typer.Option("--type", help="CSV: message type of each row.")
    ] = "track",
    mapping: Annotated[
        list[str] | None,
        typer.Option("--map", help="CSV: FIELD=COLUMN, e.g. userId=user_id (repeatable)."),
    ] = None,
    event: Annotated[str | None, typer.Option(help="CSV: event name for every row.")] = None,
    ignore: Annotated[list[str] | None, typer.Option(help="CSV: column to leave out.")] = None,
    no_process: Annotated[bool, typer.Option(help="Only log the events; process later.")] = False,
    force: Annotated[
        bool, typer.Option(help="Import even if this file was imported before.")
    ] = False,
) -> None:
    """Import historical events; timestamps are kept as written in the file.

    A file whose exact content was imported before is skipped unless --force is given.
    """
    directory = DataDir.create(data_dir)
    if not file.is_file():
        raise HeadstartError(f"{file} does not exist or is not a file", status=400)
    kind = file_format or ("csv" if file.suffix.lower() == ".csv" else "ndjson")
    digest = file_digest(file)
    seen = previous_import(connect(directory.log_path), digest)
    if seen is not None and not force:
        console.print(
            f"{file} was already imported at {to_iso(seen.imported_at)} as {seen.file_name!r} "
            f"({seen.accepted} events); pass --force to import it again"
        )
    else:
        mapping_spec = (
            CsvMapping.parse(message_type, mapping or [], event, ignore or [])
            if kind == "csv"
            else None
        )
        with progress_bar() as bar:
            # A CSV file's first line is its header, not an event.
            lines = count_lines(file) - (1 if kind == "csv" else 0)
            task = bar.add_task(f"importing {file.name}", total=max(lines, 0))
            report = run_import(
                directory.log_path,
                file,
                source=source,
                file_format=kind,
                mapping=mapping_spec,
                plan=directory.load_plan(),
                digest=digest,
                progress=lambda n: bar.advance(task, n),
            )
        console.print(
            f"{report.lines} lines: {report.accepted} events logged, "
            f"{report.duplicates} duplicates skipped, {len(report.rejected)} rejected"
        )
        for line, code, message in report.rejected[:20]:
            err_console.print(f"  line {line}: {code}: {message}")
        if len(report.rejected) > 20:
            err_console.print(f"  ... and {len(report.rejected) - 20} more")
    if not no_process:
        catch_up(directory)


@app.command()
def report(
    data_dir: DataDirOption = DATA,
    as_json: JsonOption = False,
    signup_from: Annotated[
        str | None, typer.Option(help="Only sign-ups at or after this ISO time.")
    ] = None,
    signup_to: Annotated[
        str | None, typer.Option(help="Only sign-ups before this ISO time.")
    ] = None,
) -> None:
    """Show milestone completion, activation rate, time-to-value and drop-off."""
    from headstart.onboarding.report import build_report, load_cohort
    from headstart.state.store import StateStore

    directory = DataDir.existing(data_dir)
    plan = directory.load_plan()
    if plan is None:
        raise HeadstartError(
            f"no plan is installed in {directory.root}; run `headstart plan apply FILE`", status=404
        )
    catch_up(directory, quiet=as_json)
    store = StateStore(directory.state_path)
    cohort = load_cohort(store, _instant(signup_from), _instant(signup_to))
    result = build_report(plan, cohort, SystemClock().now_us())
    store.close()
    if as_json:
        print_json(result)
    else:
        render_report(console, result)


@app.command()
def person(
    identifier: Annotated[str, typer.Argument(help="Person id, user id or anonymous id.")],
    data_dir: DataDirOption = DATA,
    as_json: JsonOption = False,
) -> None:
    """Show one person: identifiers, traits, onboarding state and event counts."""
    from headstart.api.persons import person_view
    from headstart.state.store import StateStore

    directory = DataDir.existing(data_dir)
    catch_up(directory, quiet=as_json)
    store = StateStore(directory.state_path)
    log = SQLiteEventLog(directory.log_path)
    view = person_view(store, log, directory.load_plan(), identifier)
    if as_json:
        print_json(view)
    else:
        render_person(console, view)


@sources_app.command("add")
def sources_add(
    name: str,
    data_dir: DataDirOption = DATA,
    historical: Annotated[
        bool, typer.Option(help="Keep client timestamps as sent (imports).")
    ] = False,
) -> None:
    """Create a source and print its write key."""
    registry = SourceRegistry(connect(DataDir.create(data_dir).log_path))
    source, key = registry.add(name, historical=historical)
    err_console.print(f"source {source.name} ({source.source_id}) created; its write key:")
    print(key)


@sources_app.command("list")
def sources_list(data_dir: DataDirOption = DATA, as_json: JsonOption = False) -> None:
    """List sources with their key prefix and status."""
    from rich.table import Table

    rows = SourceRegistry(connect(DataDir.existing(data_dir).log_path)).list()
    if as_json:
        print_json(
            [
                {
                    "source_id": s.source_id,
                    "name": s.name,
                    "key_prefix": s.key_prefix,
                    "historical": s.historical,
                    "created_at": to_iso(s.created_at),
                    "revoked_at": to_iso(s.revoked_at),
                }
                for s in rows
            ]
        )
        return
    table = Table()
    for column in ("name", "source id", "key prefix", "historical", "created", "status"):
        table.add_column(column)
    for s in rows:
        table.add_row(
            s.name,
            s.source_id,
            s.key_prefix + "...",
            "yes" if s.historical else "no",
            to_iso(s.created_at) or "",
            "revoked" if s.revoked_at else "active",
        )
    console.print(table)


@sources_app.command("revoke")
def sources_revoke(name: str, data_dir: DataDirOption = DATA) -> None:
    """Revoke a source's write key; a running server rejects it within a second."""
    source = SourceRegistry(connect(DataDir.existing(data_dir).log_path)).revoke(name)
    console.print(f"source {source.name} revoked at {to_iso(source.revoked_at)}")


@plan_app.command("check")
def plan_check(file: Path) -> None:
    """Validate a plan file and list every problem with its line."""
    plan = load_plan(file)
    rules = len(plan.triggers.rules) if plan.triggers is not None else 0
    console.print(
        escape(
            f"{file}: valid; {len(plan.milestones)} milestones, activation = "
            f"{' + '.join(plan.activation.milestones)} within {plan.activation.within_days:g} days; "
            f"{len(plan.segments)} segments, {len(plan.funnels)} funnels, "
            f"{len(plan.channels)} channels, {rules} trigger rules"
        ),
        soft_wrap=True,
        highlight=False,
    )


@plan_app.command("apply")
def plan_apply(file: Path, data_dir: DataDirOption = DATA) -> None:
    """Install a plan; state is rebuilt from the log with it (by the server, if one runs)."""
    directory = DataDir.create(data_dir)
    directory.install_plan(file)
    console.print(f"installed {file} into {directory.plan_path}")


@admin_app.command("rotate-key")
def admin_rotate_key(data_dir: DataDirOption = DATA) -> None:
    """Replace the admin key and print the new one (ignored while HEADSTART_ADMIN_KEY is set)."""
    admin = AdminKey(connect(DataDir.existing(data_dir).log_path))
    print(admin.rotate())


identity_commands.register(admin_app)
analytics_commands.register(app)
lifecycle_commands.register(app)


@admin_app.command("process")
def admin_process(data_dir: DataDirOption = DATA) -> None:
    """Apply every logged event that is not processed yet (no server needed)."""
    catch_up(DataDir.existing(data_dir))


def _instant(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        raise HeadstartError(
            f"{value!r} is not an ISO-8601 time, e.g. 2024-01-31", status=400
        ) from None


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("HEADSTART_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Messages quote user input, so they are escaped rather than read as rich markup, and
    # never wrapped, so that each plan problem stays on one FILE:LINE line.
    try:
        app()
    except PlanError as exc:
        err_console.print(
            f"[red]invalid plan[/]\n{escape(str(exc))}", highlight=False, soft_wrap=True
        )
        raise SystemExit(2) from None
    except HeadstartError as exc:
        err_console.print(f"[red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
