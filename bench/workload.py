"""Seeded synthetic Segment traffic for benchmarks.

Persons arrive over time and each produces sessions of page views and track calls, with an
identify call at sign-up that links the device's anonymous id to a user id. About ``active``
persons are in a session at any moment, so a batch mixes many persons, as a real stream does.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

from headstart.timeutil import to_iso

ACTIONS = [
    ("Project Created", 0.15),
    ("Invite Sent", 0.10),
    ("Report Viewed", 0.25),
    ("Button Clicked", 0.30),
    ("Order Completed", 0.05),
    ("Settings Updated", 0.15),
]

PLAN = """
signup:
  event: Signed Up
milestones:
  - name: created_project
    event: Project Created
  - name: invited_teammates
    event: Invite Sent
    min_count: 2
  - name: first_order
    event: Order Completed
    where: {total: {gte: 10}}
activation:
  milestones: [created_project, invited_teammates]
  within_days: 7
"""

CONTEXT = {
    "library": {"name": "analytics-python", "version": "2.3.4"},
    "ip": "203.0.113.7",
    "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
    "locale": "en-US",
}


def messages(
    count: int, *, seed: int = 7, active: int = 500, start_us: int
) -> Iterator[dict[str, Any]]:
    """Yield ``count`` Segment messages from about ``active`` concurrent persons."""
    rng = random.Random(seed)
    names = [name for name, _ in ACTIONS]
    weights = [weight for _, weight in ACTIONS]
    sessions: list[dict[str, Any]] = []
    next_person = 0
    clock = start_us
    for _ in range(count):
        while len(sessions) < active:
            sessions.append(_new_person(rng, next_person))
            next_person += 1
        index = rng.randrange(len(sessions))
        person = sessions[index]
        clock += rng.randrange(1_000, 50_000)
        yield _next_message(rng, person, names, weights, clock)
        person["left"] -= 1
        if person["left"] <= 0:
            sessions[index] = sessions[-1]
            sessions.pop()


def _new_person(rng: random.Random, number: int) -> dict[str, Any]:
    return {
        "anonymous_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "user_id": f"user-{number}",
        "step": 0,
        "left": rng.randrange(5, 40),
    }


def _next_message(
    rng: random.Random, person: dict[str, Any], names: list[str], weights: list[float], clock: int
) -> dict[str, Any]:
    step = person["step"]
    person["step"] += 1
    base: dict[str, Any] = {
        "messageId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "timestamp": to_iso(clock),
        "context": CONTEXT,
    }
    if step == 0:
        return {
            **base,
            "type": "page",
            "anonymousId": person["anonymous_id"],
            "name": "Pricing",
            "properties": {
                "path": "/pricing",
                "url": "https://example.com/pricing",
                "referrer": "https://news.example.org/",
            },
        }
    if step == 1:
        return {
            **base,
            "type": "track",
            "event": "Signed Up",
            "anonymousId": person["anonymous_id"],
            "properties": {"plan": rng.choice(["free", "team", "pro"])},
        }
    if step == 2:
        return {
            **base,
            "type": "identify",
            "userId": person["user_id"],
            "anonymousId": person["anonymous_id"],
            "traits": {
                "email": f"{person['user_id']}@example.com",
                "company": "Example Inc",
                "role": rng.choice(["engineer", "pm", "analyst"]),
            },
        }
    event = rng.choices(names, weights)[0]
    return {
        **base,
        "type": "track",
        "event": event,
        "userId": person["user_id"],
        "properties": {
            "total": rng.randrange(1, 100),
            "currency": "USD",
            "feature_id": f"f{rng.randrange(20)}",
        },
    }
