"""docs/channels.md cannot drift: its plan example is valid and every channel setting is named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import run_cli

from headstart.plan.channels import (
    InAppChannel,
    RetryPolicy,
    SmtpChannel,
    Unsubscribe,
    WebhookChannel,
    WebhookDestination,
    WebPushChannel,
)
from headstart.plan.load import parse_plan

DOC = Path(__file__).resolve().parent.parent / "docs" / "channels.md"


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_plan_example_is_valid(tmp_path: Path):
    [example] = yaml_blocks()
    plan = parse_plan(example, "docs/channels.md")
    assert sorted(config.type for config in plan.channels.values()) == [
        "in_app",
        "smtp",
        "web_push",
        "webhook",
    ]
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(example, encoding="utf-8")
    result = run_cli("plan", "check", str(plan_file))
    assert "valid" in result.stdout


@pytest.mark.parametrize(
    "model",
    [
        SmtpChannel,
        WebhookChannel,
        WebhookDestination,
        WebPushChannel,
        InAppChannel,
        RetryPolicy,
        Unsubscribe,
    ],
    ids=lambda model: model.__name__,
)
def test_every_setting_documented(model):
    text = DOC.read_text(encoding="utf-8")
    for name, field in model.model_fields.items():
        documented = field.alias or name
        assert f"`{documented}" in text or f".{documented}`" in text, (
            f"{model.__name__}.{documented} is not in docs/channels.md"
        )
