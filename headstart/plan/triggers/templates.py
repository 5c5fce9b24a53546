"""Message templates, checked for Jinja2 syntax and unknown variables when the plan is loaded."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment
from pydantic import Field, model_validator

from headstart.plan.triggers.base import StrictModel

# The top-level variables a template can read; the trigger engine builds each of them.
TEMPLATE_VARIABLES = frozenset(("person", "traits", "event", "onboarding", "rule", "key"))


class Template(StrictModel):
    """Message content as Jinja2 templates, rendered in a sandbox with strict undefined.

    Every string field is a template; ``data`` is a mapping whose string values are templates.
    """

    subject: str | None = None
    text: str | None = None
    html: str | None = None
    title: str | None = None
    body: str | None = None
    url: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _compiles(self) -> Template:
        sources = self.sources()
        if not sources:
            raise ValueError(
                "a template needs at least one of subject, text, html, title, body, url, data"
            )
        problems = [
            problem
            for field, source in sources.items()
            if (problem := _check_source(field, source)) is not None
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def sources(self) -> dict[str, str]:
        """Return every template source by field; ``data`` values as ``data.NAME``."""
        found = {
            name: value
            for name in ("subject", "text", "html", "title", "body", "url")
            if isinstance(value := getattr(self, name), str)
        }
        found.update(_data_sources("data", self.data))
        return found

    def version(self) -> str:
        """Return a digest of the template's source, recorded with every send."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


def _data_sources(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, str):
        return {prefix: value}
    if isinstance(value, dict):
        found: dict[str, str] = {}
        for key, item in value.items():
            found.update(_data_sources(f"{prefix}.{key}", item))
        return found
    if isinstance(value, list):
        found = {}
        for index, item in enumerate(value):
            found.update(_data_sources(f"{prefix}[{index}]", item))
        return found
    return {}


def _check_source(field: str, source: str) -> str | None:
    """Return what is wrong with one template source, or None when it compiles and reads
    only known variables."""
    environment = _syntax_env()
    try:
        tree = environment.parse(source)
    except TemplateSyntaxError as exc:
        return f"{field}: line {exc.lineno}: {exc.message}"
    unknown = meta.find_undeclared_variables(tree) - TEMPLATE_VARIABLES - environment.globals.keys()
    if not unknown:
        return None
    names = ", ".join(repr(name) for name in sorted(unknown))
    return (
        f"{field}: unknown variable {names}; a template can read "
        f"{', '.join(sorted(TEMPLATE_VARIABLES))} (for a trait, write traits.NAME)"
    )


@lru_cache(maxsize=1)
def _syntax_env() -> SandboxedEnvironment:
    return SandboxedEnvironment()
