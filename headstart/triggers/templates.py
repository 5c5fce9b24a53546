"""Message templates rendered by Jinja2's sandbox with strict undefined variables.

A template may read ``person``, ``traits``, ``event``, ``onboarding``, ``rule`` and ``key``.
A variable that does not exist raises instead of rendering as an empty string, so a message
never goes out as "Hi ,"; the engine records the failure as a ``template_error`` decision.
The ``html`` field is rendered with autoescaping, every other field without.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from headstart.plan.triggers import Template

CONTENT_FIELDS = ("subject", "text", "html", "title", "body", "url")


class TemplateFailure(Exception):
    """A template that could not be rendered for one person; ``message`` says why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Rendered:
    name: str
    version: str
    fields: dict[str, Any]


# Errors a template can raise at render time besides Jinja2's own (e.g. 1 / 0, a bad index).
_RENDER_ERRORS = (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError)


class Templates:
    """The plan's templates compiled once, plus single expressions such as a ``to`` field."""

    def __init__(self, templates: Mapping[str, Template]):
        self._text = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        self._html = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
        self._compiled: dict[str, tuple[str, dict[str, jinja2.Template], Any]] = {}
        for name, template in templates.items():
            fields = {
                field: (self._html if field == "html" else self._text).from_string(source)
                for field in CONTENT_FIELDS
                if isinstance(source := getattr(template, field), str)
            }
            self._compiled[name] = (template.version(), fields, self._compile_data(template.data))
        self._expressions: dict[str, jinja2.Template] = {}

    def render(self, name: str, context: Mapping[str, Any]) -> Rendered:
        """Render the template ``name``; raise ``TemplateFailure`` naming the field that failed."""
        version, fields, data = self._compiled[name]
        rendered: dict[str, Any] = {}
        for field, template in fields.items():
            rendered[field] = _render(template, context, f"template {name!r} field {field}")
        if data:
            rendered["data"] = _render_data(data, context, f"template {name!r} field data")
        return Rendered(name, version, rendered)

    def render_text(self, source: str, context: Mapping[str, Any], what: str) -> str:
        """Render one string of a step (``to``, a property or trait value) as a template."""
        template = self._expressions.get(source)
        if template is None:
            try:
                template = self._text.from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateFailure(f"{what}: line {exc.lineno}: {exc.message}") from None
            self._expressions[source] = template
        return _render(template, context, what)

    def render_value(self, value: Any, context: Mapping[str, Any], what: str) -> Any:
        """Render every string inside ``value`` (a scalar, list or mapping) as a template."""
        if isinstance(value, str):
            return self.render_text(value, context, what) if "{" in value else value
        if isinstance(value, dict):
            return {
                key: self.render_value(item, context, f"{what}.{key}")
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [
                self.render_value(item, context, f"{what}[{i}]") for i, item in enumerate(value)
            ]
        return value

    def _compile_data(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._text.from_string(value)
        if isinstance(value, dict):
            return {key: self._compile_data(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._compile_data(item) for item in value]
        return value


def _render(template: jinja2.Template, context: Mapping[str, Any], what: str) -> str:
    try:
        return template.render(context)
    except _RENDER_ERRORS as exc:
        detail = getattr(exc, "message", None) or str(exc)
        raise TemplateFailure(f"{what}: {type(exc).__name__}: {detail}") from None


def _render_data(value: Any, context: Mapping[str, Any], what: str) -> Any:
    if isinstance(value, jinja2.Template):
        return _render(value, context, what)
    if isinstance(value, dict):
        return {key: _render_data(item, context, f"{what}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_render_data(item, context, f"{what}[{i}]") for i, item in enumerate(value)]
    return value
