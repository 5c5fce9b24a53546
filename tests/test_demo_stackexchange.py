"""The Stack Exchange demo: dump mapping, quirk handling, report numbers, `headstart demo`.

Report numbers are checked against a plain computation over the packaged XML in this file,
and against the reference table published with the data (headstart/demo/data/martialarts/
README.md).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import signal
import statistics
import subprocess
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import free_port, headstart_command, run_cli, wait_until

from headstart.demo.dump import SITES, Site
from headstart.demo.stackexchange import Export, export_site, is_bulk_reaward
from headstart.plan.load import load_plan
from headstart.timeutil import parse_iso

MARTIALARTS = SITES["martialarts"]
BICYCLES_META = SITES["bicycles-meta"]
START_TIMEOUT_S = 120.0

# The demo plan's milestones in plan order, each with the badges that reach it.
MILESTONE_BADGES = {
    "Autobiographer": {"Autobiographer"},
    "Participated": {"Supporter", "Student"},
    "Supporter": {"Supporter"},
    "Student": {"Student"},
    "Teacher": {"Teacher"},
    "Editor": {"Editor"},
    "Informed": {"Informed"},
}
ACTIVATION_MILESTONE = "Participated"
ACTIVATION_DAYS = 14

# Published with the data: first award per user, from CreationDate, with no quirk handling.
# badge: (users, share of all users in %, median hours after sign-up)
DATA_README_TABLE = {
    "Informed": (651, 6.7, 0.1),
    "Autobiographer": (4790, 49.3, 0.1),
    "Student": (941, 9.7, 13.8),
    "Supporter": (1739, 17.9, 1.5),
    "Teacher": (1051, 10.8, 14.2),
    "Editor": (694, 7.1, 64.3),
}
DATA_README_AUTOBIOGRAPHERS_ON_BULK_DAY = 405

# Real rows of the Martial Arts dump (Users.xml and Badges.xml; Votes.xml for row 1461).
MARTIALARTS_USERS = """\
<row Id="-1" Reputation="1" CreationDate="2012-01-31T18:33:40.817" LastAccessDate="2012-01-31T18:33:40.817" Views="5" UpVotes="325" DownVotes="638" AccountId="-1" />
<row Id="2" Reputation="101" CreationDate="2012-01-31T20:53:10.920" LastAccessDate="2013-08-01T19:50:31.273" Views="1" UpVotes="1" DownVotes="0" AccountId="2" />
<row Id="3" Reputation="233" CreationDate="2012-01-31T21:02:22.900" LastAccessDate="2020-09-11T18:02:57.440" Views="6" UpVotes="11" DownVotes="0" AccountId="2985" />
<row Id="11" Reputation="7446" CreationDate="2012-01-31T21:10:23.567" LastAccessDate="2019-07-27T02:05:03.197" Views="120" UpVotes="660" DownVotes="31" AccountId="342550" />
<row Id="25" Reputation="9761" CreationDate="2012-01-31T21:25:02.210" LastAccessDate="2017-12-01T17:24:46.520" Views="197" UpVotes="337" DownVotes="12" AccountId="139772" />
<row Id="82" Reputation="14714" CreationDate="2012-02-01T07:30:34.180" LastAccessDate="2021-05-06T07:49:33.437" Views="395" UpVotes="2368" DownVotes="897" AccountId="82907" />
<row Id="3203" Reputation="101" CreationDate="2014-09-23T01:13:50.660" LastAccessDate="2014-09-24T19:39:19.790" Views="0" UpVotes="0" DownVotes="0" AccountId="2549995" />
<row Id="3205" Reputation="101" CreationDate="2014-09-24T06:57:53.207" LastAccessDate="2014-12-05T20:41:46.530" Views="0" UpVotes="1" DownVotes="0" AccountId="4470148" />
<row Id="3207" Reputation="101" CreationDate="2014-09-24T13:54:44.073" LastAccessDate="2015-04-20T08:12:45.970" Views="0" UpVotes="0" DownVotes="0" AccountId="4451090" />
"""
MARTIALARTS_BADGES = """\
<row Id="1" UserId="2" Name="Autobiographer" Date="2012-01-31T20:57:26.347" Class="3" TagBased="False" />
<row Id="7" UserId="3" Name="Student" Date="2012-01-31T21:07:26.707" Class="3" TagBased="False" />
<row Id="1323" UserId="11" Name="Fanatic" Date="2012-07-23T01:58:58.270" Class="1" TagBased="False" />
<row Id="5691" UserId="1586" Name="Popular Question" Date="2014-09-24T12:45:09.863" Class="3" TagBased="False" />
<row Id="5692" UserId="3207" Name="Autobiographer" Date="2014-09-24T13:59:10.340" Class="3" TagBased="False" />
<row Id="5701" UserId="3205" Name="Autobiographer" Date="2014-09-24T20:24:12.913" Class="3" TagBased="False" />
<row Id="5702" UserId="3203" Name="Autobiographer" Date="2014-09-24T20:24:12.913" Class="3" TagBased="False" />
<row Id="11183" UserId="82" Name="training" Date="2015-11-19T03:01:06.390" Class="3" TagBased="True" />
"""
MARTIALARTS_VOTES = """\
<row Id="1461" PostId="154" VoteTypeId="8" UserId="25" CreationDate="2012-02-07T00:00:00.000" BountyAmount="100" />
"""

# Real rows of the Bicycles Meta dump.
META_USERS = """\
<row Id="-1" Reputation="1" CreationDate="2010-08-25T18:10:17.000" LastAccessDate="2010-08-25T19:00:27.313" Views="50" UpVotes="17" DownVotes="3" AccountId="-1" />
<row Id="19" Reputation="2817" CreationDate="2010-08-25T19:41:42.000" LastAccessDate="2021-08-26T12:42:18.070" Views="5" UpVotes="6" DownVotes="1" AccountId="15330" />
<row Id="21" Reputation="938" CreationDate="2010-08-25T19:41:53.000" LastAccessDate="2011-01-05T19:48:00.580" Views="0" UpVotes="4" DownVotes="1" AccountId="157369" />
<row Id="47" Reputation="4366" CreationDate="2010-08-25T20:04:31.000" LastAccessDate="2012-02-13T22:05:01.010" Views="7" UpVotes="9" DownVotes="0" AccountId="17769" />
<row Id="76" Reputation="18827" CreationDate="2010-08-25T20:46:31.000" LastAccessDate="2023-07-23T01:23:26.923" Views="153" UpVotes="403" DownVotes="26" AccountId="40142" />
"""
META_POSTS = """\
<row Id="2" PostTypeId="1" AcceptedAnswerId="4" CreationDate="2010-08-25T20:28:26.243" Score="5" ViewCount="238" OwnerUserId="19" LastEditorUserId="76" LastEditDate="2010-09-16T18:01:20.493" LastActivityDate="2010-09-16T18:01:20.493" Tags="&lt;discussion&gt;&lt;on-off-topic&gt;&lt;questions&gt;&lt;too-localized&gt;" AnswerCount="5" CommentCount="2" ContentLicense="CC BY-SA 2.5" />
<row Id="4" PostTypeId="2" ParentId="2" CreationDate="2010-08-25T20:40:10.597" Score="9" OwnerUserId="47" LastActivityDate="2010-08-25T20:40:10.597" CommentCount="1" ContentLicense="CC BY-SA 2.5" />
"""
META_COMMENTS = """\
<row Id="2" PostId="2" Score="0" CreationDate="2010-08-25T20:52:46.240" UserId="21" ContentLicense="CC BY-SA 2.5" />
<row Id="16" PostId="4" Score="0" CreationDate="2010-08-26T14:26:30.200" UserId="97" ContentLicense="CC BY-SA 2.5" />
"""
META_POST_HISTORY = """\
<row Id="6" PostHistoryTypeId="2" PostId="2" RevisionGUID="dd7c5b04-5095-48e4-bfc4-a267bae4d7ad" CreationDate="2010-08-25T20:28:26.243" UserId="19" ContentLicense="CC BY-SA 2.5" />
<row Id="7" PostHistoryTypeId="1" PostId="2" RevisionGUID="dd7c5b04-5095-48e4-bfc4-a267bae4d7ad" CreationDate="2010-08-25T20:28:26.243" UserId="19" ContentLicense="CC BY-SA 2.5" />
<row Id="48" PostHistoryTypeId="5" PostId="2" RevisionGUID="1d010f95-0e64-4a09-97ab-f858d2c749fa" CreationDate="2010-08-26T14:27:10.577" UserId="19" ContentLicense="CC BY-SA 2.5" />
<row Id="49" PostHistoryTypeId="6" PostId="2" RevisionGUID="1d010f95-0e64-4a09-97ab-f858d2c749fa" CreationDate="2010-08-26T14:27:10.577" UserId="19" ContentLicense="CC BY-SA 2.5" />
<row Id="251" PostHistoryTypeId="6" PostId="2" RevisionGUID="7d2633eb-5bb4-456a-9284-e22bb47d8b0b" CreationDate="2010-09-16T18:01:20.493" UserId="76" ContentLicense="CC BY-SA 2.5" />
"""
META_VOTES = """\
<row Id="6" PostId="2" VoteTypeId="2" CreationDate="2010-08-25T00:00:00.000" />
<row Id="11" PostId="3" VoteTypeId="10" CreationDate="2010-08-25T00:00:00.000" />
<row Id="168" PostId="4" VoteTypeId="1" CreationDate="2010-09-03T00:00:00.000" />
"""
META_BADGES = """\
<row Id="6" UserId="21" Name="Autobiographer" Date="2010-08-25T19:46:49.197" Class="3" TagBased="False" />
<row Id="25" UserId="21" Name="Supporter" Date="2010-08-25T20:51:49.783" Class="3" TagBased="False" />
<row Id="26" UserId="76" Name="Supporter" Date="2010-08-25T20:51:49.813" Class="3" TagBased="False" />
"""


def write_dump(folder: Path, tables: dict[str, str]) -> Path:
    """Write each table's rows as TABLE.xml, wrapped the way the dump wraps them."""
    folder.mkdir(parents=True, exist_ok=True)
    for table, rows in tables.items():
        text = (
            f'<?xml version="1.0" encoding="utf-8"?>\n<{table.lower()}>\n{rows}</{table.lower()}>\n'
        )
        (folder / f"{table}.xml").write_text(text, encoding="utf-8")
    return folder


def make_site(name: str, tables: tuple[str, ...], *, meta: bool) -> Site:
    return Site(name, f"{name}.example", name, tables, "unused.yaml", meta)


@pytest.fixture
def martialarts_rows(tmp_path: Path) -> Export:
    folder = write_dump(
        tmp_path / "martialarts",
        {"Users": MARTIALARTS_USERS, "Badges": MARTIALARTS_BADGES, "Votes": MARTIALARTS_VOTES},
    )
    return export_site(make_site("ma", ("Users", "Badges", "Votes"), meta=False), folder)


@pytest.fixture
def meta_rows(tmp_path: Path) -> Export:
    tables = {
        "Users": META_USERS,
        "Posts": META_POSTS,
        "Comments": META_COMMENTS,
        "PostHistory": META_POST_HISTORY,
        "Votes": META_VOTES,
        "Badges": META_BADGES,
    }
    folder = write_dump(tmp_path / "meta", tables)
    return export_site(make_site("bm", tuple(tables), meta=True), folder)


def by_id(export: Export) -> dict[str, dict[str, Any]]:
    return {message["messageId"]: message for message in export.messages}


# --- mapping of real rows -------------------------------------------------------------------


def test_user_row_maps_to_identify(martialarts_rows: Export) -> None:
    identify = by_id(martialarts_rows)["se-ma-user-3"]
    assert identify == {
        "type": "identify",
        "messageId": "se-ma-user-3",
        "userId": "3",
        "timestamp": "2020-09-11T18:02:57.440Z",
        "traits": {
            "reputation": 233,
            "views": 6,
            "up_votes": 11,
            "down_votes": 0,
            "account_id": 2985,
            "created_at": "2012-01-31T21:02:22.900Z",
            "last_access_at": "2020-09-11T18:02:57.440Z",
            "site": "ma.example",
        },
    }


def test_user_row_maps_to_signup(martialarts_rows: Export) -> None:
    signup = by_id(martialarts_rows)["se-ma-signup-3"]
    assert signup["event"] == "Signed Up"
    assert signup["userId"] == "3"
    assert signup["timestamp"] == "2012-01-31T21:02:22.900Z"


@pytest.mark.parametrize(
    ("badge_id", "expected"),
    [
        pytest.param(
            "7",
            {"name": "Student", "class": "bronze", "tag_based": False, "bulk_reaward": False},
            id="student-bronze",
        ),
        pytest.param(
            "1323",
            {"name": "Fanatic", "class": "gold", "tag_based": False, "bulk_reaward": False},
            id="fanatic-gold",
        ),
        pytest.param(
            "11183",
            {"name": "training", "class": "bronze", "tag_based": True, "bulk_reaward": False},
            id="tag-badge",
        ),
        pytest.param(
            "5702",
            {"name": "Autobiographer", "class": "bronze", "tag_based": False, "bulk_reaward": True},
            id="bulk-reaward",
        ),
    ],
)
def test_badge_row_properties(
    martialarts_rows: Export, badge_id: str, expected: dict[str, Any]
) -> None:
    message = by_id(martialarts_rows)[f"se-ma-badge-{badge_id}"]
    assert message["event"] == "Badge Awarded"
    assert message["properties"] == {"badge_id": int(badge_id), **expected}


def test_community_user_is_skipped(martialarts_rows: Export) -> None:
    assert all(message["userId"] != "-1" for message in martialarts_rows.messages)
    assert martialarts_rows.stats.skipped["Users: Community user (Id -1)"] == 1
    assert martialarts_rows.stats.events["identify"] == 8


def test_badge_of_unknown_user_is_skipped(martialarts_rows: Export) -> None:
    assert "se-ma-badge-5691" not in by_id(martialarts_rows)
    assert martialarts_rows.stats.skipped["Badges: user not in Users.xml"] == 1


def test_vote_with_known_voter(martialarts_rows: Export) -> None:
    vote = by_id(martialarts_rows)["se-ma-vote-1461"]
    assert vote["event"] == "Vote Cast"
    assert vote["userId"] == "25"
    assert vote["timestamp"] == "2012-02-07T00:00:00.000Z"
    assert vote["properties"] == {
        "vote_id": 1461,
        "post_id": 154,
        "vote_type": "bounty_start",
        "bounty_amount": 100,
        "timestamp_precision": "day",
    }


def test_messages_sorted_with_unique_ids(martialarts_rows: Export) -> None:
    ids = [message["messageId"] for message in martialarts_rows.messages]
    stamps = [parse_iso(message["timestamp"]) for message in martialarts_rows.messages]
    assert len(ids) == len(set(ids))
    assert stamps == sorted(stamps)


# Badge, its award time, and the user's sign-up, all from the rows above.
BULK_CASES = [
    pytest.param(
        "Autobiographer",
        "2014-09-24T20:24:12.913",
        "2014-09-23T01:13:50.660",
        True,
        id="batch-43h-after-signup",
    ),
    pytest.param(
        "Autobiographer",
        "2014-09-24T20:24:12.913",
        "2014-09-24T06:57:53.207",
        False,
        id="batch-13h-after-signup",
    ),
    pytest.param(
        "Autobiographer",
        "2014-09-24T13:59:10.340",
        "2014-09-24T13:54:44.073",
        False,
        id="same-day-signup-5min",
    ),
    pytest.param(
        "Popular Question",
        "2014-09-24T12:45:09.863",
        "2014-01-03T18:45:08.513",
        False,
        id="other-badge-that-day",
    ),
    pytest.param(
        "Autobiographer",
        "2012-01-31T20:57:26.347",
        "2012-01-31T20:53:10.920",
        False,
        id="other-day",
    ),
]


@pytest.mark.parametrize(("name", "awarded", "signed_up", "expected"), BULK_CASES)
def test_bulk_reaward_rule(name: str, awarded: str, signed_up: str, expected: bool) -> None:
    assert is_bulk_reaward(name, parse_iso(awarded), parse_iso(signed_up)) is expected


def test_meta_posts(meta_rows: Export) -> None:
    messages = by_id(meta_rows)
    question = messages["se-bm-post-2"]
    answer = messages["se-bm-post-4"]
    assert question["event"] == "Question Asked"
    assert question["userId"] == "19"
    assert question["properties"]["tags"] == [
        "discussion",
        "on-off-topic",
        "questions",
        "too-localized",
    ]
    assert answer["event"] == "Answer Posted"
    assert answer["userId"] == "47"
    assert answer["properties"]["question_id"] == 2
    assert answer["properties"]["accepted"] is True


def test_meta_comment_of_unknown_user(meta_rows: Export) -> None:
    messages = by_id(meta_rows)
    assert messages["se-bm-comment-2"]["properties"] == {
        "comment_id": 2,
        "post_id": 2,
        "post_type": "question",
        "score": 0,
    }
    assert "se-bm-comment-16" not in messages
    assert meta_rows.stats.skipped["Comments: user not in Users.xml"] == 1


def test_meta_edits_grouped_by_revision(meta_rows: Export) -> None:
    edits = [m for m in meta_rows.messages if m.get("event") == "Post Edited"]
    assert [edit["messageId"] for edit in edits] == ["se-bm-edit-48", "se-bm-edit-251"]
    assert edits[0]["properties"] == {
        "post_id": 2,
        "fields": ["body", "tags"],
        "rollback": False,
        "own_post": True,
    }
    assert edits[1]["userId"] == "76"
    assert edits[1]["properties"]["own_post"] is False


def test_meta_votes(meta_rows: Export) -> None:
    messages = by_id(meta_rows)
    received = messages["se-bm-vote-6"]
    accepted = messages["se-bm-accept-168"]
    assert received["event"] == "Vote Received"
    assert received["userId"] == "19"
    assert received["timestamp"] == "2010-08-25T00:00:00.000Z"
    assert received["properties"]["vote"] == "up"
    assert received["properties"]["timestamp_precision"] == "day"
    assert accepted["event"] == "Answer Accepted"
    assert accepted["userId"] == "19", "the asker accepts the answer"
    assert accepted["properties"]["self_answer"] is False
    assert meta_rows.stats.skipped["Votes: VoteTypeId 10 without a voter"] == 1


@pytest.mark.parametrize(
    ("user_id", "joined_at", "first_action"),
    [
        pytest.param("19", "2010-08-25T20:28:26.243Z", "Question Asked", id="asked"),
        pytest.param("47", "2010-08-25T20:40:10.597Z", "Answer Posted", id="answered"),
        pytest.param("21", "2010-08-25T20:51:49.783Z", "Supporter badge", id="upvoted-first"),
        pytest.param("76", "2010-08-25T20:51:49.813Z", "Supporter badge", id="upvoted-then-edited"),
    ],
)
def test_meta_joined_at_first_action(
    meta_rows: Export, user_id: str, joined_at: str, first_action: str
) -> None:
    joined = by_id(meta_rows)[f"se-bm-joined-{user_id}"]
    assert joined["event"] == "Meta Joined"
    assert joined["timestamp"] == joined_at
    assert joined["properties"]["first_action"] == first_action


def test_meta_joined_counts_only_users_with_actions(meta_rows: Export) -> None:
    assert meta_rows.stats.events["Meta Joined"] == 4
    assert meta_rows.stats.events["Signed Up"] == 4


# --- the packaged data against a plain reading of the XML -----------------------------------


def xml_rows(site: Site, table: str) -> list[dict[str, str]]:
    with gzip.open(site.data_folder() / f"{table}.xml.gz", "rb") as handle:
        root = ElementTree.parse(handle).getroot()
    return [dict(row.attrib) for row in root.iter("row")]


def dump_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass
class Reference:
    """Onboarding numbers computed straight from Users.xml and Badges.xml."""

    signups: dict[str, datetime]
    reached: dict[str, dict[str, datetime]]
    bulk_excluded: int

    def hours(self, milestone: str) -> list[float]:
        return [
            max(0.0, (at - self.signups[user]).total_seconds() / 3600)
            for user, at in self.reached[milestone].items()
        ]

    def activation_hours(self) -> list[float]:
        window = timedelta(days=ACTIVATION_DAYS)
        return [
            hours
            for user, at in self.reached[ACTIVATION_MILESTONE].items()
            if at - self.signups[user] <= window
            for hours in [max(0.0, (at - self.signups[user]).total_seconds() / 3600)]
        ]

    def dropoff(self) -> list[int]:
        remaining = set(self.signups)
        counts = [len(remaining)]
        for milestone in MILESTONE_BADGES:
            remaining &= set(self.reached[milestone])
            counts.append(len(remaining))
        return counts


def reference(*, exclude_bulk: bool) -> Reference:
    """First award per user of each milestone's badges, counted from the user's sign-up.

    With ``exclude_bulk``, Autobiographer badges dated 2014-09-24 that came more than a day
    after sign-up are left out, as the demo documents.
    """
    signups = {
        row["Id"]: dump_time(row["CreationDate"])
        for row in xml_rows(MARTIALARTS, "Users")
        if row["Id"] != "-1"
    }
    reached: dict[str, dict[str, datetime]] = {name: {} for name in MILESTONE_BADGES}
    excluded = 0
    for row in xml_rows(MARTIALARTS, "Badges"):
        user, at = row["UserId"], dump_time(row["Date"])
        bulk = (
            row["Name"] == "Autobiographer"
            and row["Date"].startswith("2014-09-24")
            and at - signups[user] > timedelta(days=1)
        )
        excluded += bulk
        if bulk and exclude_bulk:
            continue
        for milestone, badges in MILESTONE_BADGES.items():
            if row["Name"] in badges and (
                user not in reached[milestone] or at < reached[milestone][user]
            ):
                reached[milestone][user] = at
    return Reference(signups, reached, excluded)


def percentile(values: list[float], fraction: float) -> float:
    """Linear interpolation between order statistics (statistics' inclusive method)."""
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[round(fraction * 100) - 1]


def assert_report_matches(report: dict[str, Any], expected: Reference) -> None:
    assert report["signups"] == len(expected.signups)
    rows = {row["milestone"]: row for row in report["milestones"]}
    assert list(rows) == list(MILESTONE_BADGES)
    for milestone in MILESTONE_BADGES:
        hours = expected.hours(milestone)
        assert rows[milestone]["reached"] == len(hours), milestone
        assert rows[milestone]["median_hours_after_signup"] == pytest.approx(
            statistics.median(hours), rel=1e-9
        ), milestone

    activated = expected.activation_hours()
    assert report["activation"]["activated"] == len(activated)
    assert report["ttv"]["median_hours"] == pytest.approx(statistics.median(activated), rel=1e-9)
    assert report["ttv"]["p75_hours"] == pytest.approx(percentile(activated, 0.75), rel=1e-9)
    assert report["ttv"]["p90_hours"] == pytest.approx(percentile(activated, 0.90), rel=1e-9)
    assert [step["persons"] for step in report["dropoff"]] == expected.dropoff()


def test_plan_milestones_match_reference() -> None:
    plan = load_plan(MARTIALARTS.plan_path())
    assert [milestone.name for milestone in plan.milestones] == list(MILESTONE_BADGES)
    assert plan.activation.milestones == [ACTIVATION_MILESTONE]
    assert plan.activation.within_days == ACTIVATION_DAYS


@pytest.fixture(scope="module")
def martialarts_export() -> Export:
    return export_site(MARTIALARTS)


def test_export_counts_match_xml(martialarts_export: Export) -> None:
    users = xml_rows(MARTIALARTS, "Users")
    badges = xml_rows(MARTIALARTS, "Badges")
    stats = martialarts_export.stats
    assert stats.events["identify"] == len(users) - 1
    assert stats.events["Signed Up"] == len(users) - 1
    assert stats.events["Badge Awarded"] == len(badges)
    assert len(martialarts_export.messages) == 2 * (len(users) - 1) + len(badges)
    ids = {message["messageId"] for message in martialarts_export.messages}
    assert len(ids) == len(martialarts_export.messages)


def test_bulk_reawards_counted(martialarts_export: Export) -> None:
    on_bulk_day = [
        row
        for row in xml_rows(MARTIALARTS, "Badges")
        if row["Name"] == "Autobiographer" and row["Date"].startswith("2014-09-24")
    ]
    marked = [
        m
        for m in martialarts_export.messages
        if m.get("event") == "Badge Awarded" and m["properties"]["bulk_reaward"]
    ]
    assert len(on_bulk_day) == DATA_README_AUTOBIOGRAPHERS_ON_BULK_DAY
    assert len(marked) == reference(exclude_bulk=True).bulk_excluded
    assert martialarts_export.stats.bulk_reawards == len(marked)
    assert {m["properties"]["name"] for m in marked} == {"Autobiographer"}


# --- `headstart demo` as a user runs it -----------------------------------------------------


@dataclass
class DemoRun:
    """A `headstart demo` subprocess and the lines it printed."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]
    output_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.output_path.read_text(encoding="utf-8", errors="replace")

    def printed(self, label: str) -> str:
        """Return the value printed after ``label:`` at the start of a line."""
        for line in self.output().splitlines():
            if line.startswith(f"{label}:"):
                return line.split(":", 1)[1].strip().split()[0]
        raise AssertionError(f"no line starts with {label!r} in:\n{self.output()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


def start_demo(root: Path, name: str, env: dict[str, str] | None = None) -> DemoRun:
    """Start `headstart demo` on ``root`` and wait until GET /health returns 200."""
    port = free_port()
    output_path = root.parent / f"{name}.out"
    environment = {**os.environ, **(env or {})}
    environment.pop("HEADSTART_DATA_DIR", None)
    if env is None:
        environment.pop("HEADSTART_ADMIN_KEY", None)
    command = headstart_command(
        "demo", "--data-dir", str(root), "--host", "127.0.0.1", "--port", str(port)
    )
    with output_path.open("wb") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    run = DemoRun(root, port, process, output_path)

    def healthy() -> bool:
        assert process.poll() is None, f"headstart demo exited:\n{run.output()}"
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{run.url}/health", timeout=5, trust_env=False).status_code == 200
        return False

    try:
        wait_until(
            healthy, START_TIMEOUT_S, f"headstart demo did not serve /health:\n{run.output()}"
        )
    except BaseException:
        run.stop()
        raise
    return run


@dataclass
class DemoSession:
    first: DemoRun
    second: DemoRun
    log_head_after_first: int
    report_after_first: dict[str, Any]
    # The data directory as the first run left it, import included; tests use copies of it.
    snapshot: Path

    def copy_snapshot(self, destination: Path) -> Path:
        shutil.copytree(self.snapshot, destination)
        return destination


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSession]:
    """`headstart demo` started twice on one fresh data directory; the second keeps running."""
    root = tmp_path_factory.mktemp("demo") / "headstart-data"
    first = start_demo(root, "first")
    try:
        admin = {"Authorization": f"Bearer {first.printed('admin key')}"}
        status = httpx.get(f"{first.url}/api/status", headers=admin, trust_env=False).json()
        report = httpx.get(f"{first.url}/api/report", headers=admin, trust_env=False).json()
    finally:
        first.stop()
    snapshot = root.parent / "snapshot"
    shutil.copytree(root, snapshot)
    second = start_demo(root, "second")
    try:
        yield DemoSession(first, second, status["log_head"], report, snapshot)
    finally:
        second.stop()


def test_demo_prints_url_and_keys(demo: DemoSession) -> None:
    assert demo.first.printed("url") == demo.first.url
    assert demo.first.printed("write key").startswith("hs_wk_")
    assert demo.first.printed("admin key").startswith("hs_admin_")
    assert "imported 35368 events (0 duplicates, 0 rejected)" in demo.first.output()
    admin_key = demo.first.printed("admin key")
    assert f"export HEADSTART_ADMIN_KEY={admin_key}" in demo.first.output()


def test_demo_serves_health_and_report(demo: DemoSession) -> None:
    admin_key = demo.second.printed("admin key")
    with httpx.Client(base_url=demo.second.url, trust_env=False, timeout=60) as client:
        health = client.get("/health")
        unauthorized = client.get("/api/report")
        report = client.get("/api/report", headers={"Authorization": f"Bearer {admin_key}"})
    assert health.json() == {"status": "ok"}
    assert unauthorized.status_code == 401
    assert report.status_code == 200
    assert report.json()["signups"] == len(xml_rows(MARTIALARTS, "Users")) - 1


def test_demo_report_matches_xml_reference(demo: DemoSession) -> None:
    assert_report_matches(demo.report_after_first, reference(exclude_bulk=True))


def test_demo_second_start_skips_import(demo: DemoSession) -> None:
    admin_key = demo.second.printed("admin key")
    status = httpx.get(
        f"{demo.second.url}/api/status",
        headers={"Authorization": f"Bearer {admin_key}"},
        trust_env=False,
    ).json()
    assert "import skipped" in demo.second.output()
    assert status["log_head"] == demo.log_head_after_first
    assert demo.second.printed("write key") == demo.first.printed("write key")
    assert admin_key == demo.first.printed("admin key")


def test_demo_write_key_ingests(demo: DemoSession) -> None:
    write_key = demo.second.printed("write key")
    admin_key = demo.second.printed("admin key")
    with httpx.Client(base_url=demo.second.url, trust_env=False, timeout=60) as client:
        sent = client.post(
            "/v1/track", auth=(write_key, ""), json={"userId": "demo-1", "event": "Signed Up"}
        )
        person = client.get(
            "/api/persons/demo-1",
            params={"wait": "true"},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
    assert sent.status_code == 200, sent.text
    assert person.json()["onboarding"]["signup_at"] is not None


def test_demo_credentials_file(demo: DemoSession) -> None:
    path = demo.second.root / "demo-credentials.json"
    credentials = orjson.loads(path.read_bytes())
    assert path.stat().st_mode & 0o777 == 0o600
    assert credentials["write_key"] == demo.second.printed("write key")
    assert credentials["admin_key"] == demo.second.printed("admin key")


def test_demo_rejects_running_directory(demo: DemoSession) -> None:
    result = subprocess.run(
        headstart_command("demo", "--data-dir", str(demo.second.root), "--port", str(free_port())),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "already runs" in " ".join(result.stderr.split())


def test_demo_rejects_other_site(demo: DemoSession) -> None:
    result = subprocess.run(
        headstart_command("demo", "--data-dir", str(demo.second.root), "--site", "bicycles-meta"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "contains the martialarts demo" in " ".join(result.stderr.split())


def test_demo_uses_admin_key_from_environment(demo: DemoSession, tmp_path: Path) -> None:
    root = demo.copy_snapshot(tmp_path / "data")
    run = start_demo(root, "env", {"HEADSTART_ADMIN_KEY": "hs_admin_from_env"})
    try:
        report = httpx.get(
            f"{run.url}/api/report",
            headers={"Authorization": "Bearer hs_admin_from_env"},
            trust_env=False,
            timeout=60,
        )
    finally:
        run.stop()
    assert report.status_code == 200
    assert "admin key: the value of HEADSTART_ADMIN_KEY" in run.output()
    assert "hs_admin_from_env" not in run.output()


def test_report_without_bulk_filter_matches_data_readme(demo: DemoSession, tmp_path: Path) -> None:
    root = demo.copy_snapshot(tmp_path / "data")
    plan_text = MARTIALARTS.plan_path().read_text(encoding="utf-8")
    variant = tmp_path / "no-bulk-filter.yaml"
    variant.write_text(plan_text.replace(", bulk_reaward: false", ""), encoding="utf-8")
    assert "bulk_reaward" not in load_plan(variant).model_dump_json()

    run_cli("plan", "apply", str(variant), "--data-dir", str(root))
    report = orjson.loads(run_cli("report", "--json", "--data-dir", str(root)).stdout)

    assert_report_matches(report, reference(exclude_bulk=False))
    rows = {row["milestone"]: row for row in report["milestones"]}
    for badge, (users, share_percent, median_hours) in DATA_README_TABLE.items():
        assert rows[badge]["reached"] == users, badge
        assert round(100 * rows[badge]["share"], 1) == share_percent, badge
        assert round(rows[badge]["median_hours_after_signup"], 1) == median_hours, badge


# --- `headstart demo export` and `headstart import` -----------------------------------------


def meta_joined_reference() -> int:
    """Users (not Community) with a post, comment, edit, or Supporter/Critic badge on meta."""
    users = {row["Id"] for row in xml_rows(BICYCLES_META, "Users")} - {"-1"}
    acting = {
        row.get("OwnerUserId")
        for row in xml_rows(BICYCLES_META, "Posts")
        if row["PostTypeId"] in ("1", "2")
    }
    acting |= {row.get("UserId") for row in xml_rows(BICYCLES_META, "Comments")}
    acting |= {
        row.get("UserId")
        for row in xml_rows(BICYCLES_META, "PostHistory")
        if row["PostHistoryTypeId"] in ("4", "5", "6", "7", "8", "9")
    }
    acting |= {
        row["UserId"]
        for row in xml_rows(BICYCLES_META, "Badges")
        if row["Name"] in ("Supporter", "Critic")
    }
    return len(acting & users)


def test_export_then_import_twice(tmp_path: Path) -> None:
    out = tmp_path / "bicycles-meta.ndjson"
    data = tmp_path / "data"
    run_cli("demo", "export", "--site", "bicycles-meta", str(out))
    run_cli("plan", "apply", str(BICYCLES_META.plan_path()), "--data-dir", str(data))
    lines = out.read_bytes().splitlines()

    first = run_cli("import", str(out), "--data-dir", str(data))
    second = run_cli("import", str(out), "--data-dir", str(data))
    forced = run_cli("import", str(out), "--data-dir", str(data), "--force")
    report = orjson.loads(run_cli("report", "--json", "--data-dir", str(data)).stdout)

    assert f"{len(lines)} events logged, 0 duplicates skipped, 0 rejected" in first.stdout
    assert "was already imported" in second.stdout
    assert f"0 events logged, {len(lines)} duplicates skipped, 0 rejected" in forced.stdout
    assert report["signups"] == meta_joined_reference()


def test_saved_funnel_and_segments_match_demo_docs(demo: DemoSession, tmp_path: Path) -> None:
    root = str(demo.copy_snapshot(tmp_path / "data"))
    funnel = orjson.loads(run_cli("funnel", "--name", "onboarding", "--json", "-d", root).stdout)
    segments = orjson.loads(run_cli("segments", "--json", "-d", root).stdout)["segments"]
    report = orjson.loads(run_cli("report", "--json", "-d", root).stdout)

    assert [(s["label"], s["units"]) for s in funnel["steps"]] == [
        ("Signed Up", 9713),
        ("Completed profile", 3711),
        ("Participated", 707),
    ]
    sizes = {row["segment"]: row["persons"] for row in segments}
    assert sizes == {"participants": 2125, "profile_only": 3309}
    reached = {row["milestone"]: row["reached"] for row in report["milestones"]}
    assert sizes["participants"] == reached["Participated"]
