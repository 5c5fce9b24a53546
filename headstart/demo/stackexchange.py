"""Map a Stack Exchange data dump to Segment messages (identify and track calls).

- Users.xml: one identify call per user (traits from the dump's snapshot) and a ``Signed Up``
  track at ``CreationDate``.
- Badges.xml: one ``Badge Awarded`` track per badge, with properties ``name``, ``class``,
  ``tag_based`` and ``bulk_reaward``.
- Posts.xml, Comments.xml, PostHistory.xml and Votes.xml (packaged for the meta site only):
  ``Question Asked``, ``Answer Posted``, ``Comment Posted``, ``Post Edited``,
  ``Answer Accepted``, ``Vote Received`` and ``Vote Cast``.
- On a meta site, ``Meta Joined`` at each user's first action there.

Every message has a deterministic ``messageId``, ``se-<site>-<kind>-<row Id>``, so importing
the same dump again is dropped as duplicate while the log's duplicate window remembers the ids.

Quirks of the real data and how they are handled (docs/demo.md explains them with numbers):

- The Community user (``Id -1``) is a bot, not a person: its rows are skipped and counted.
- Rows of deleted users (no user id) and of users missing from Users.xml are skipped and counted.
- On 2014-09-24 Stack Exchange re-ran the Autobiographer badge for everyone at once. Such a badge
  awarded more than a day after the user's sign-up gets ``bulk_reaward: true``, so plans can
  leave it out of milestones.
- ``Votes.CreationDate`` is cut to the day: vote-derived events carry
  ``timestamp_precision: "day"`` and may sort before the post they are about.
- On a meta site, ``CreationDate`` is the main site's sign-up, often years before the first
  visit to meta. ``Signed Up`` keeps it, and ``Meta Joined`` marks the first meta action.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from headstart.demo.dump import Row, Site, read_rows
from headstart.timeutil import MICROS_PER_DAY, parse_iso, to_datetime, to_iso

logger = logging.getLogger(__name__)

COMMUNITY_USER_ID = "-1"

BULK_REAWARD_DAY = "2014-09-24"
BULK_REAWARD_BADGES = frozenset({"Autobiographer"})
# A re-run badge that came within a day of sign-up stays a normal award, because the user
# earned it about then.
BULK_REAWARD_MIN_DELAY_US = MICROS_PER_DAY

BADGE_CLASSES = {"1": "gold", "2": "silver", "3": "bronze"}
POST_EVENTS = {"1": "Question Asked", "2": "Answer Posted"}
POST_TYPES = {"1": "question", "2": "answer"}
# PostHistoryTypeId 4, 5 and 6 edit the title, body and tags, and 7, 8 and 9 roll them back.
EDIT_FIELDS = {"4": "title", "5": "body", "6": "tags", "7": "title", "8": "body", "9": "tags"}
ROLLBACK_TYPES = frozenset({"7", "8", "9"})
VOTE_ACCEPTED = "1"
VOTES_RECEIVED = {"2": "up", "3": "down"}
VOTE_TYPES = {"5": "favorite", "8": "bounty_start", "9": "bounty_close"}
# Votes.xml names no voter for up- and downvotes, so on a meta site these badges are the only
# trace of a user's first upvote and first downvote.
VOTE_BADGES = frozenset({"Supporter", "Critic"})
META_JOIN_ACTIONS = frozenset(
    {"Question Asked", "Answer Posted", "Comment Posted", "Post Edited", "Vote Cast"}
)


@dataclass
class ExportStats:
    """Counts of an export: messages per event name, and dump rows left out by reason."""

    events: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    bulk_reawards: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": dict(sorted(self.events.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "bulk_reawards": self.bulk_reawards,
        }


@dataclass
class Export:
    """The messages of one site, sorted by timestamp, and the counts behind them."""

    site: Site
    messages: list[dict[str, Any]]
    stats: ExportStats


@dataclass(frozen=True, slots=True)
class _Post:
    type_id: str
    owner: str | None
    parent_id: str | None
    accepted_answer_id: str | None


def export_site(site: Site, folder: Path | None = None) -> Export:
    """Map the dump of ``site`` in ``folder`` (default: the packaged copy) to messages."""
    exporter = _Exporter(site, folder or site.data_folder())
    exporter.run()
    messages = sorted(exporter.messages, key=lambda m: (m["timestamp"], m["messageId"]))
    logger.info(
        "exported %d messages from %s; skipped rows: %s",
        len(messages),
        site.name,
        dict(exporter.stats.skipped),
    )
    return Export(site, messages, exporter.stats)


def write_ndjson(messages: list[dict[str, Any]], handle: IO[bytes]) -> None:
    for message in messages:
        handle.write(orjson.dumps(message, option=orjson.OPT_APPEND_NEWLINE))


def is_bulk_reaward(name: str, awarded_at: int, signed_up_at: int) -> bool:
    """Return whether a badge came from the 2014-09-24 re-run, long after the behaviour."""
    if name not in BULK_REAWARD_BADGES:
        return False
    if to_datetime(awarded_at).date().isoformat() != BULK_REAWARD_DAY:
        return False
    return awarded_at - signed_up_at > BULK_REAWARD_MIN_DELAY_US


class _Exporter:
    def __init__(self, site: Site, folder: Path):
        self.site = site
        self.folder = folder
        self.messages: list[dict[str, Any]] = []
        self.stats = ExportStats()
        self.signups: dict[str, int] = {}
        self.posts: dict[str, _Post] = {}
        self.first_action: dict[str, tuple[int, str]] = {}

    def run(self) -> None:
        for row in read_rows(self.folder, "Users"):
            self.user(row)
        tables = set(self.site.tables)
        posts = list(read_rows(self.folder, "Posts")) if "Posts" in tables else []
        for row in posts:
            self.posts[row["Id"]] = _Post(
                row["PostTypeId"],
                row.get("OwnerUserId"),
                row.get("ParentId"),
                row.get("AcceptedAnswerId"),
            )
        for row in posts:
            self.post(row)
        for row in read_rows(self.folder, "Badges"):
            self.badge(row)
        if "Comments" in tables:
            for row in read_rows(self.folder, "Comments"):
                self.comment(row)
        if "PostHistory" in tables:
            self.edits(read_rows(self.folder, "PostHistory"))
        if "Votes" in tables:
            for row in read_rows(self.folder, "Votes"):
                self.vote(row)
        if self.site.meta:
            self.meta_joined()

    def user(self, row: Row) -> None:
        user_id = row["Id"]
        if user_id == COMMUNITY_USER_ID:
            self.stats.skipped["Users: Community user (Id -1)"] += 1
            return
        created = _instant(row["CreationDate"])
        last_access = _instant(row.get("LastAccessDate") or row["CreationDate"])
        self.signups[user_id] = created
        traits: dict[str, Any] = {
            "reputation": _int(row.get("Reputation")),
            "views": _int(row.get("Views")),
            "up_votes": _int(row.get("UpVotes")),
            "down_votes": _int(row.get("DownVotes")),
            "account_id": _int(row.get("AccountId")),
            "created_at": to_iso(created),
            "last_access_at": to_iso(last_access),
            "site": self.site.host,
        }
        # The traits are the dump's snapshot, stamped at the user's last visit. The person's
        # last_seen can still be later: badges such as Yearling arrive without a visit.
        self.messages.append(
            {
                "type": "identify",
                "messageId": self.message_id("user", user_id),
                "userId": user_id,
                "timestamp": to_iso(last_access),
                "traits": {name: value for name, value in traits.items() if value is not None},
            }
        )
        self.stats.events["identify"] += 1
        self.track("signup", user_id, user_id, "Signed Up", created, {"site": self.site.host})

    def badge(self, row: Row) -> None:
        user_id = self.person(row.get("UserId"), "Badges")
        if user_id is None:
            return
        awarded = _instant(row["Date"])
        bulk = is_bulk_reaward(row["Name"], awarded, self.signups[user_id])
        self.stats.bulk_reawards += bulk
        properties = {
            "badge_id": int(row["Id"]),
            "name": row["Name"],
            "class": BADGE_CLASSES.get(row.get("Class", ""), "unknown"),
            "tag_based": row.get("TagBased") == "True",
            "bulk_reaward": bulk,
        }
        self.track("badge", row["Id"], user_id, "Badge Awarded", awarded, properties)
        if row["Name"] in VOTE_BADGES and not bulk:
            self.note_action(user_id, awarded, f"{row['Name']} badge")

    def post(self, row: Row) -> None:
        type_id = row["PostTypeId"]
        event = POST_EVENTS.get(type_id)
        if event is None:
            self.stats.skipped[f"Posts: PostTypeId {type_id} (not a question or answer)"] += 1
            return
        user_id = self.person(row.get("OwnerUserId"), "Posts")
        if user_id is None:
            return
        properties: dict[str, Any] = {
            "post_id": int(row["Id"]),
            "score": _int(row.get("Score")),
            "comment_count": _int(row.get("CommentCount")),
        }
        if type_id == "1":
            properties["tags"] = _tags(row.get("Tags", ""))
            properties["answer_count"] = _int(row.get("AnswerCount"))
            properties["view_count"] = _int(row.get("ViewCount"))
            properties["closed"] = "ClosedDate" in row
        else:
            parent = self.posts.get(row.get("ParentId") or "")
            properties["question_id"] = _int(row.get("ParentId"))
            properties["accepted"] = parent is not None and parent.accepted_answer_id == row["Id"]
        self.track("post", row["Id"], user_id, event, _instant(row["CreationDate"]), properties)

    def comment(self, row: Row) -> None:
        user_id = self.person(row.get("UserId"), "Comments")
        if user_id is None:
            return
        post = self.posts.get(row["PostId"])
        properties = {
            "comment_id": int(row["Id"]),
            "post_id": int(row["PostId"]),
            "post_type": POST_TYPES.get(post.type_id) if post else None,
            "score": _int(row.get("Score")),
        }
        at = _instant(row["CreationDate"])
        self.track("comment", row["Id"], user_id, "Comment Posted", at, properties)

    def edits(self, rows: Iterable[Row]) -> None:
        """Map PostHistory rows to one ``Post Edited`` per revision (title, body and tags)."""
        revisions: dict[str, list[Row]] = {}
        for row in rows:
            if row["PostHistoryTypeId"] not in EDIT_FIELDS:
                self.stats.skipped["PostHistory: not an edit (creation, close, notice, ...)"] += 1
                continue
            revisions.setdefault(row.get("RevisionGUID") or row["Id"], []).append(row)
        for group in revisions.values():
            self.edit(group)

    def edit(self, group: list[Row]) -> None:
        first = min(group, key=lambda row: int(row["Id"]))
        user_id = self.person(first.get("UserId"), "PostHistory edits")
        if user_id is None:
            return
        post = self.posts.get(first["PostId"])
        properties: dict[str, Any] = {
            "post_id": int(first["PostId"]),
            "fields": sorted({EDIT_FIELDS[row["PostHistoryTypeId"]] for row in group}),
            "rollback": any(row["PostHistoryTypeId"] in ROLLBACK_TYPES for row in group),
            "own_post": post.owner == user_id if post else None,
        }
        at = _instant(first["CreationDate"])
        self.track("edit", first["Id"], user_id, "Post Edited", at, properties)

    def vote(self, row: Row) -> None:
        type_id = row["VoteTypeId"]
        if row.get("UserId"):
            self.vote_cast(row)
        elif type_id in VOTES_RECEIVED:
            self.vote_received(row, VOTES_RECEIVED[type_id])
        elif type_id == VOTE_ACCEPTED:
            self.answer_accepted(row)
        else:
            self.stats.skipped[f"Votes: VoteTypeId {type_id} without a voter"] += 1

    def vote_received(self, row: Row, direction: str) -> None:
        post = self.posts.get(row["PostId"])
        if post is None:
            self.stats.skipped["Votes: post not in Posts.xml"] += 1
            return
        user_id = self.person(post.owner, "Votes (post owner)")
        if user_id is None:
            return
        properties = {
            "vote_id": int(row["Id"]),
            "post_id": int(row["PostId"]),
            "post_type": POST_TYPES.get(post.type_id),
            "vote": direction,
            "timestamp_precision": "day",
        }
        at = _instant(row["CreationDate"])
        self.track("vote", row["Id"], user_id, "Vote Received", at, properties)

    def answer_accepted(self, row: Row) -> None:
        """Credit an accept vote to the asker, who is always its voter."""
        answer = self.posts.get(row["PostId"])
        question = self.posts.get(answer.parent_id or "") if answer else None
        if answer is None or question is None:
            self.stats.skipped["Votes: accepted answer or its question not in Posts.xml"] += 1
            return
        user_id = self.person(question.owner, "Votes (asker)")
        if user_id is None:
            return
        properties = {
            "vote_id": int(row["Id"]),
            "answer_id": int(row["PostId"]),
            "question_id": _int(answer.parent_id),
            "self_answer": answer.owner == question.owner,
            "timestamp_precision": "day",
        }
        at = _instant(row["CreationDate"])
        self.track("accept", row["Id"], user_id, "Answer Accepted", at, properties)

    def vote_cast(self, row: Row) -> None:
        """Map a vote whose voter the dump names (favourites and bounties)."""
        user_id = self.person(row.get("UserId"), "Votes")
        if user_id is None:
            return
        properties: dict[str, Any] = {
            "vote_id": int(row["Id"]),
            "post_id": _int(row.get("PostId")),
            "vote_type": VOTE_TYPES.get(row["VoteTypeId"], f"type_{row['VoteTypeId']}"),
            "timestamp_precision": "day",
        }
        if row.get("BountyAmount"):
            properties["bounty_amount"] = _int(row["BountyAmount"])
        at = _instant(row["CreationDate"])
        self.track("vote", row["Id"], user_id, "Vote Cast", at, properties)

    def meta_joined(self) -> None:
        for user_id, (at, action) in sorted(self.first_action.items()):
            days = (at - self.signups[user_id]) / MICROS_PER_DAY
            properties = {"first_action": action, "days_since_signup": round(days, 3)}
            self.track("joined", user_id, user_id, "Meta Joined", at, properties)

    def track(
        self,
        kind: str,
        row_id: str,
        user_id: str,
        event: str,
        at: int,
        properties: dict[str, Any],
    ) -> None:
        self.messages.append(
            {
                "type": "track",
                "messageId": self.message_id(kind, row_id),
                "userId": user_id,
                "event": event,
                "timestamp": to_iso(at),
                "properties": properties,
            }
        )
        self.stats.events[event] += 1
        if event in META_JOIN_ACTIONS:
            self.note_action(user_id, at, event)

    def note_action(self, user_id: str, at: int, action: str) -> None:
        current = self.first_action.get(user_id)
        if current is None or (at, action) < current:
            self.first_action[user_id] = (at, action)

    def person(self, value: str | None, table: str) -> str | None:
        """Return the user id a row belongs to, or None (counted) when it is not a person."""
        if not value:
            self.stats.skipped[f"{table}: deleted user (no user id)"] += 1
            return None
        if value == COMMUNITY_USER_ID:
            self.stats.skipped[f"{table}: Community user (Id -1)"] += 1
            return None
        if value not in self.signups:
            self.stats.skipped[f"{table}: user not in Users.xml"] += 1
            return None
        return value

    def message_id(self, kind: str, row_id: str) -> str:
        return f"se-{self.site.name}-{kind}-{row_id}"


def _instant(text: str) -> int:
    """Parse a dump timestamp, which is UTC without an offset (``2012-01-31T20:57:26.347``)."""
    return parse_iso(text)


def _int(text: str | None) -> int | None:
    return None if text is None or text == "" else int(text)


def _tags(text: str) -> list[str]:
    """Split ``<a><b>`` (older dumps) or ``|a|b|`` (newer dumps) into tag names."""
    if text.startswith("|"):
        return [tag for tag in text.split("|") if tag]
    return re.findall(r"<([^<>]+)>", text)
