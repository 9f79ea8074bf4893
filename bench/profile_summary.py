"""Summaries of py-spy's raw output (collapsed stacks): self, cumulative and by part.

Two kinds of recordings are read. ``--gil`` samples only the thread holding the GIL:
where the process's Python CPU time goes (the event loop and the writer thread share
one GIL, so this is what one worker can do at most). Without it, every thread that is
not idle is sampled: wall time, including waits with the GIL released (the COMMIT's
fsync) and waits *for* the GIL (which show up in whatever C call released it, e.g.
``os.urandom`` in ``uuid4``).
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass

# Leaf frames of a thread waiting for work rather than doing it (set aside without --gil).
IDLE_LEAVES = {
    "_worker (concurrent/futures/thread.py)": "database pool threads waiting for work",
    "Runner.run (asyncio/runners.py)": "event loop in uvloop's C code, mostly epoll_wait",
    "SqliteWriter._run (storage/sqlite_writer.py)": "sqlite-writer waiting for work",
}
# Entry points and the request's chain of middleware and routing: frames (nearly) every
# sample has, left out of the cumulative list (their own cost is in the *(self)* parts).
CHAIN = (
    "threading.py",
    "concurrent/futures/thread.py",
    "click/",
    "(cloudlink-gateway)",
    "(gateway/cli/",
    "(uvicorn/",
    "(asyncio/runners.py)",
    "(starlette/applications.py)",
    "(starlette/middleware/",
    "(starlette/_exception_handler.py)",
    "(starlette/routing.py)",
    "(gateway/web/routing.py)",
    "(gateway/web/error_handling.py)",
    "ObservabilityMiddleware.__call__ (",
    "operation.<locals>",
    "SqliteWriter._run (",
)


@dataclass(frozen=True)
class Part:
    """A part of the create path: the samples with a frame matching one of ``patterns``
    (with ``self_only``, the samples whose innermost frame matches)."""

    label: str
    patterns: tuple[str, ...]
    self_only: bool = False
    unless: tuple[str, ...] = ()  # ... and whose innermost frame matches none of these


# The parts overlap (a sample counts in every part it matches), so they do not add up.
PARTS = [
    Part(
        "scim2-models validation of the body (`parse_user` → `model_validate`)",
        ("parse_user (gateway/scim/parsing.py)",),
    ),
    Part(
        "… of it, the SCIM context rules (`_enforce_scim_context`: mutability, required)",
        ("BaseModel._enforce_scim_context (scim2_models",),
    ),
    Part(
        "… of it, email validation (pydantic `EmailStr` → email-validator)",
        ("validate_email (email_validator",),
    ),
    Part("CloudLink rules (`to_record`)", ("to_record (gateway/scim/rules.py)",)),
    Part(
        "write unit on the sqlite-writer thread (BEGIN … COMMIT)",
        ("SqliteWriter._commit (storage/sqlite_writer.py)",),
    ),
    Part("… of it, COMMIT (fsync, `synchronous=FULL`)", ("DefaultDialect.do_commit (sqlalchemy",)),
    Part(
        "… of it, the user's INSERTs (`insert_user`)", ("insert_user (gateway/scim/repository.py)",)
    ),
    Part(
        "recording the event (`normalized_user`, `changed_properties`, `record_event`)",
        (
            "record_event (gateway/events/service.py)",
            "normalized_user (gateway/scim/rules.py)",
            "changed_properties (gateway/scim/rules.py)",
        ),
    ),
    Part("`uuid4` (request id, user id, event id)", ("uuid4 (uuid.py)",)),
    Part(
        "token check (`authenticate`: digest read + SHA-256 compare)",
        ("authenticate (gateway/scim/auth.py)", "_checked (gateway/scim/auth.py)"),
    ),
    Part("… of it, the token digest (`token_matches`)", ("token_matches (gateway/security.py)",)),
    Part("access log (structlog)", ("(structlog/", "(observability/logging.py)")),
    Part("Prometheus metrics", ("(prometheus_client/",)),
    Part("request body read and JSON decode (`read_json`)", ("read_json (gateway/web/bodies.py)",)),
    Part("response rendering (`json_response`)", ("json_response (gateway/web/responses.py)",)),
    Part(
        "handing work to threads (`ThreadPoolExecutor.submit`, `SqliteWriter.submit`)",
        ("ThreadPoolExecutor.submit (", "SqliteWriter.submit ("),
    ),
    # Self time: a library's or layer's own code, wherever it was called from.
    Part("scim2-models' own code (self)", ("(scim2_models/",), self_only=True),
    Part(
        "Starlette routing and middleware (self)",
        ("(starlette/", "(gateway/web/routing.py)"),
        self_only=True,
    ),
    Part(
        "the gateway's middleware (self)",
        ("(observability/middleware.py)", "(gateway/web/error_handling.py)"),
        self_only=True,
    ),
    Part("uvicorn's HTTP protocol (self)", ("(uvicorn/",), self_only=True),
    Part(
        "SQLAlchemy, without the COMMIT (self)",
        ("(sqlalchemy/",),
        self_only=True,
        unless=("do_commit (",),
    ),
    Part("asyncio futures and uvloop's C code (self)", ("(asyncio/",), self_only=True),
]


_LINE = re.compile(r":\d+\)$")


@dataclass
class Profile:
    """Samples by stack (frames without line numbers), and those set aside as idle."""

    stacks: collections.Counter[tuple[str, ...]]
    threads: collections.Counter[str]  # counted samples per thread name
    idle: collections.Counter[str]  # samples set aside, per reason
    total: int  # every sample, idle included

    @property
    def counted(self) -> int:
        return sum(self.stacks.values())

    def share(self, n: int) -> float:
        return 100 * n / self.counted if self.counted else 0.0


def parse_raw(text: str, *, drop_idle: bool) -> Profile:
    """Read py-spy's ``--format raw --threads`` output."""
    stacks: collections.Counter[tuple[str, ...]] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    idle: collections.Counter[str] = collections.Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = re.sub(r"^thread \(\d+\): ", "", frames[0])
        thread = re.sub(r"_\d+$", "", thread)  # db_0, db_1 ... -> db
        names = tuple(_LINE.sub(")", f) for f in frames[1:])
        n = int(count)
        total += n
        if not names:
            idle["no Python frame"] += n
        elif drop_idle and names[-1] in IDLE_LEAVES:
            idle[IDLE_LEAVES[names[-1]]] += n
        else:
            stacks[names] += n
            threads[thread] += n
    return Profile(stacks, threads, idle, total)


def self_times(profile: Profile) -> list[tuple[str, int]]:
    """Functions by the samples in which they were the innermost frame."""
    counts: collections.Counter[str] = collections.Counter()
    for stack, n in profile.stacks.items():
        counts[stack[-1]] += n
    return counts.most_common()


def cumulative_times(profile: Profile) -> list[tuple[str, int]]:
    """Functions by the samples they were on the stack of, without the request's chain.

    Functions always on the stack together (one calling the other and nothing else) are
    listed once, by the innermost.
    """
    counts: collections.Counter[str] = collections.Counter()
    seen_in: dict[str, set[int]] = collections.defaultdict(set)
    depth: dict[str, int] = {}
    for i, (stack, n) in enumerate(profile.stacks.items()):
        for level, frame in enumerate(stack):
            if any(part in frame for part in CHAIN) or i in seen_in[frame]:
                continue
            counts[frame] += n
            seen_in[frame].add(i)
            depth[frame] = max(depth.get(frame, 0), level)
    groups: dict[frozenset[int], str] = {}
    for frame, ids in seen_in.items():
        key = frozenset(ids)
        if key not in groups or depth[frame] > depth[groups[key]]:
            groups[key] = frame
    kept = set(groups.values())
    return [(f, n) for f, n in counts.most_common() if f in kept]


def part_times(profile: Profile) -> list[tuple[str, int]]:
    """The samples of each part of the create path (PARTS)."""
    out = []
    for part in PARTS:
        n = 0
        for stack, count in profile.stacks.items():
            frames = stack[-1:] if part.self_only else stack
            if any(p in frame for frame in frames for p in part.patterns) and not any(
                u in stack[-1] for u in part.unless
            ):
                n += count
        out.append((part.label, n))
    return out


def _pct(profile: Profile, n: int) -> str:
    return f"{profile.share(n):.1f} %"


def function_table(rows: list[tuple[str, int]], profile: Profile, top: int) -> str:
    lines = ["| share | function (file) |", "|---:|---|"]
    lines += [f"| {_pct(profile, n)} | `{name}` |" for name, n in rows[:top]]
    return "\n".join(lines)


def parts_table(gil: Profile, busy: Profile) -> str:
    """Each part's share of the GIL-holding samples and of the busy-thread samples."""
    lines = [
        "| part of the create path | share of GIL held | share of busy threads |",
        "|---|---:|---:|",
    ]
    for (label, n_gil), (_, n_busy) in zip(part_times(gil), part_times(busy), strict=True):
        lines.append(f"| {label} | {_pct(gil, n_gil)} | {_pct(busy, n_busy)} |")
    return "\n".join(lines)


def threads_line(profile: Profile) -> str:
    return ", ".join(f"{name} {_pct(profile, n)}" for name, n in profile.threads.most_common())
