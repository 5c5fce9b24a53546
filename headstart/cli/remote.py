"""Run an analysis command on the running server's admin API or on the data directory.

A server that runs on the data directory has ``analytics.duckdb`` open for writing, so a
command calls its REST API with the admin key. Otherwise the command catches up the processor,
syncs the warehouse and runs the analysis in this process. Both paths return the same JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from rich.console import Console

from headstart.cli.common import catch_up, console, print_json
from headstart.datadir import DataDir
from headstart.errors import HeadstartError, InvalidInput
from headstart.plan.model import Plan
from headstart.timeutil import parse_iso

if TYPE_CHECKING:
    from headstart.analytics.warehouse import Warehouse

SERVER_TIMEOUT_S = 300.0

AdminKeyOption = Annotated[
    str | None,
    typer.Option(
        "--admin-key",
        envvar="HEADSTART_ADMIN_KEY",
        help="Admin key of the server running on the data directory, if one runs.",
        show_default=False,
    ),
]
AsOfOption = Annotated[
    str | None,
    typer.Option(help="ISO-8601 instant the analysis is as of; default: the latest event."),
]

# A query parameter value: a list repeats the parameter, and None leaves it out.
QueryValue = str | int | float | bool | list[str] | None
# An analysis run in this process on a synced warehouse and the installed plan.
LocalAnalysis = Callable[["Warehouse", Plan | None], dict[str, Any]]
Renderer = Callable[[Console, dict[str, Any]], None]


@dataclass(frozen=True)
class ApiRequest:
    """A call to the admin API of the server running on the data directory."""

    path: str
    params: Mapping[str, QueryValue] = field(default_factory=dict)
    method: str = "GET"
    body: Any = None


def fetch(
    data_dir: Path,
    admin_key: str | None,
    request: ApiRequest,
    local: LocalAnalysis,
    *,
    quiet: bool,
) -> dict[str, Any]:
    """Return an analysis as JSON data, from the running server or from the directory.

    ``quiet`` hides the progress bar of catching up the processor.
    """
    directory = DataDir.existing(data_dir)
    url = directory.running_server_url()
    if url is not None:
        return _from_server(url, admin_key, request)
    from headstart.analytics.warehouse import Warehouse

    catch_up(directory, quiet=quiet)
    warehouse = Warehouse.open(directory)
    try:
        warehouse.sync()
        return local(warehouse, directory.load_plan())
    finally:
        warehouse.close()


def show(result: dict[str, Any], render: Renderer, *, as_json: bool) -> None:
    """Print ``result`` as indented JSON, or as ``render`` draws it."""
    if as_json:
        print_json(result)
        return
    render(console, result)


def run_analysis(
    data_dir: Path,
    admin_key: str | None,
    request: ApiRequest,
    local: LocalAnalysis,
    render: Renderer,
    *,
    as_json: bool,
) -> None:
    """Fetch an analysis from the server or the directory, then print it."""
    result = fetch(data_dir, admin_key, request, local, quiet=as_json)
    show(result, render, as_json=as_json)


def parse_as_of(value: str | None) -> int | None:
    """Parse the ``--as-of`` option into UTC microseconds; None stays None."""
    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        raise InvalidInput(f"--as-of {value!r} is not an ISO-8601 time, e.g. 2024-05-01") from None


def _from_server(url: str, admin_key: str | None, request: ApiRequest) -> dict[str, Any]:
    if not admin_key:
        raise InvalidInput(
            f"a server runs on this data directory ({url}); pass --admin-key or set "
            "HEADSTART_ADMIN_KEY so the command can call its API"
        )
    try:
        response = httpx.request(
            request.method,
            url + request.path,
            params=_query_pairs(request.params),
            json=request.body,
            headers={"Authorization": f"Bearer {admin_key}"},
            timeout=SERVER_TIMEOUT_S,
            trust_env=False,
        )
    except httpx.HTTPError as exc:
        raise HeadstartError(
            f"request to the server at {url}{request.path} failed: {exc}"
        ) from None
    try:
        data: dict[str, Any] = response.json()
    except ValueError:
        data = {"message": response.text}
    if response.status_code != 200:
        raise HeadstartError(
            str(data.get("message", response.text)),
            code=str(data.get("code", "http_error")),
            status=response.status_code,
        )
    return data


def _query_pairs(
    params: Mapping[str, QueryValue],
) -> list[tuple[str, str | int | float | bool | None]]:
    return [
        (name, item)
        for name, value in params.items()
        for item in (value if isinstance(value, list) else [value])
        if item is not None
    ]
