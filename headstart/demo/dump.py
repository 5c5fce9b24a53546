"""The Stack Exchange dumps packaged for the demo, and a reader for their XML rows.

A dump file has one ``<row .../>`` element per record, and every field is an XML attribute.
The packaged copies are gzip-compressed (``Users.xml.gz``); a folder with plain ``Users.xml``
files, as the data dump ships them, can be read too.
"""

from __future__ import annotations

import gzip
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO

from headstart.errors import InvalidInput, NotFound

Row = dict[str, str]


@dataclass(frozen=True, slots=True)
class Site:
    """One packaged Stack Exchange site: its dump files and its onboarding plan."""

    name: str
    host: str
    title: str
    tables: tuple[str, ...]
    plan_file: str
    # A meta site shares its accounts with its main site, so CreationDate there is the main
    # site's sign-up, not the first visit to meta.
    meta: bool = False

    def data_folder(self) -> Path:
        return _package_path("data", self.name)

    def plan_path(self) -> Path:
        return _package_path(self.plan_file)


SITES: dict[str, Site] = {
    "martialarts": Site(
        name="martialarts",
        host="martialarts.stackexchange.com",
        title="Martial Arts Stack Exchange",
        tables=("Users", "Badges"),
        plan_file="martialarts.yaml",
    ),
    "bicycles-meta": Site(
        name="bicycles-meta",
        host="bicycles.meta.stackexchange.com",
        title="Bicycles Meta Stack Exchange",
        tables=("Users", "Badges", "Posts", "Comments", "PostHistory", "Votes"),
        plan_file="bicycles-meta.yaml",
        meta=True,
    ),
}


def get_site(name: str) -> Site:
    site = SITES.get(name)
    if site is None:
        raise InvalidInput(
            f"--site {name!r} is not a packaged demo site; use one of {', '.join(SITES)}",
            code="unknown_site",
        )
    return site


def read_rows(folder: Path, table: str) -> Iterator[Row]:
    """Yield the attributes of each ``<row>`` of ``table`` (for example ``Users``) in ``folder``.

    Reads ``TABLE.xml.gz`` when present, otherwise ``TABLE.xml``.
    """
    compressed = folder / f"{table}.xml.gz"
    plain = folder / f"{table}.xml"
    if compressed.exists():
        with gzip.open(compressed, "rb") as handle:
            yield from _rows(handle)
        return
    if plain.exists():
        with plain.open("rb") as handle:
            yield from _rows(handle)
        return
    raise NotFound(
        f"{table}.xml.gz or {table}.xml is missing in {folder}; "
        "pass a folder that holds the site's dump files"
    )


def _rows(handle: IO[bytes] | gzip.GzipFile) -> Iterator[Row]:
    for _, element in ElementTree.iterparse(handle, events=("end",)):
        if element.tag != "row":
            continue
        yield dict(element.attrib)
        element.clear()


def _package_path(*parts: str) -> Path:
    # The package is installed as plain files (wheel or editable install), so the resource
    # has a real path that other code can open.
    return Path(str(resources.files("headstart.demo").joinpath(*parts)))
