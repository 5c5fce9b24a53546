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
from jinja2 import StrictUndefined, meta
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


# A compiled field: the text itself when it has no template syntax, else a Jinja2 template.
Compiled = str | jinja2.Template
_SYNTAX = ("{{", "{%", "{#")


class Templates:
    """The plan's templates compiled once, plus single expressions such as a ``to`` field.

    Each template knows the top-level variables it reads, so the caller builds only those.
    """

    def __init__(self, templates: Mapping[str, Template]):
        self._text = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        self._html = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
        self._compiled: dict[str, tuple[str, dict[str, Compiled], Any, frozenset[str]]] = {}
        for name, template in templates.items():
            fields = {
                field: self._compile(source, self._html if field == "html" else self._text)
                for field in CONTENT_FIELDS
                if isinstance(source := getattr(template, field), str)
            }
            variables = frozenset().union(
                *(self._variables(source) for source in template.sources().values())
            )
            data = self._compile_data(template.data)
            self._compiled[name] = (template.version(), fields, data, variables)
        self._expressions: dict[str, tuple[Compiled, frozenset[str]]] = {}
        # Jinja2's default globals (range, dict, ...), merged into the variables once per call
        # so each field renders without copying them again.
        self._globals = dict(self._text.globals)

    def variables(self, name: str) -> frozenset[str]:
        """Return the top-level variables the template ``name`` reads."""
        return self._compiled[name][3]

    def value_variables(self, value: Any, what: str) -> frozenset[str]:
        """Return the variables the template strings inside ``value`` read."""
        if isinstance(value, str):
            return self._expression(value, what)[1]
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            return frozenset().union(*(self.value_variables(item, what) for item in value))
        return frozenset()

    def render(self, name: str, context: Mapping[str, Any]) -> Rendered:
        """Render the template ``name``; raise ``TemplateFailure`` naming the field that failed."""
        version, fields, data, _ = self._compiled[name]
        variables = {**self._globals, **context}
        rendered: dict[str, Any] = {}
        for field, template in fields.items():
            rendered[field] = _render(template, variables, f"template {name!r} field {field}")
        if data:
            rendered["data"] = _render_data(data, variables, f"template {name!r} field data")
        return Rendered(name, version, rendered)

    def render_text(self, source: str, context: Mapping[str, Any], what: str) -> str:
        """Render one string of a step (``to``, a property or trait value) as a template."""
        template = self._expression(source, what)[0]
        if isinstance(template, str):
            return template
        return _render(template, {**self._globals, **context}, what)

    def render_value(self, value: Any, context: Mapping[str, Any], what: str) -> Any:
        """Render every string inside ``value`` (a scalar, list or mapping) as a template."""
        if isinstance(value, str):
            return self.render_text(value, context, what)
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

    def _expression(self, source: str, what: str) -> tuple[Compiled, frozenset[str]]:
        found = self._expressions.get(source)
        if found is None:
            try:
                found = (self._compile(source, self._text), self._variables(source))
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateFailure(f"{what}: line {exc.lineno}: {exc.message}") from None
            self._expressions[source] = found
        return found

    def _compile(self, source: str, environment: SandboxedEnvironment) -> Compiled:
        if not any(mark in source for mark in _SYNTAX):
            return source
        return environment.from_string(source)

    def _variables(self, source: str) -> frozenset[str]:
        if not any(mark in source for mark in _SYNTAX):
            return frozenset()
        return frozenset(meta.find_undeclared_variables(self._text.parse(source)))

    def _compile_data(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._compile(value, self._text)
        if isinstance(value, dict):
            return {key: self._compile_data(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._compile_data(item) for item in value]
        return value


def _render(template: Compiled, variables: dict[str, Any], what: str) -> str:
    """Render with ``variables`` that already include the environment's globals.

    ``new_context(shared=True)`` uses the dict as it is; ``Template.render`` would copy the
    globals and variables into a new dict for every field.
    """
    if isinstance(template, str):
        return template
    try:
        context = template.new_context(variables, shared=True)
        return template.environment.concat(template.root_render_func(context))
    except _RENDER_ERRORS as exc:
        detail = getattr(exc, "message", None) or str(exc)
        raise TemplateFailure(f"{what}: {type(exc).__name__}: {detail}") from None


def _render_data(value: Any, context: dict[str, Any], what: str) -> Any:
    if isinstance(value, (str, jinja2.Template)):
        return _render(value, context, what)
    if isinstance(value, dict):
        return {key: _render_data(item, context, f"{what}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_render_data(item, context, f"{what}[{i}]") for i, item in enumerate(value)]
    return value
