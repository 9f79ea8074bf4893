"""WhatsApp's approved templates: what a channel offers, and a send checked against them.

Outside the 24-hour customer service window WhatsApp delivers only templates that Meta
approved, each with its name, language and numbered or named variables (``{{1}}``). A
provider lists them (Twilio's Content API) or its operator registers them (CM.com); the
chat package sees only this neutral shape, through a ``TemplateCatalog`` the app wires in.
A templated send is checked here before anything is stored: an unknown template, one not
approved, or variables that do not fill it are refused, naming what is wrong, because the
provider would only refuse it minutes later as a failed message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Protocol

from pydantic import BaseModel, ConfigDict, Field

from gateway.web.errors import TemplateNotApproved, TemplateVariables, UnknownTemplate, shown
from gateway.web.openapi import NUL_FREE

APPROVED = "approved"
# A variable's value: WhatsApp refuses an empty parameter, and caps a body at 1024.
MAX_VALUE = 1024
MAX_VARIABLES = 100
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]{1,64})\s*\}\}")
# How many of the channel's templates a refusal lists, to pick the right one.
LISTED = 10


@dataclass(frozen=True)
class Template:
    """One template of a channel's provider, as the gateway shows and checks it.

    ``id`` is what a send names (Twilio's ``HX`` Content SID, a CM.com template's
    ``namespace/name/language``); ``variables`` are its placeholders' names with an
    example value each; ``body`` its text with the placeholders, where known.
    """

    id: str
    name: str
    language: str
    variables: tuple[tuple[str, str], ...]
    approval: str
    category: str | None = None
    body: str | None = None
    rejection_reason: str | None = None
    # WhatsApp's namespace of the business account's templates, where a send names it.
    namespace: str | None = None

    @property
    def variable_names(self) -> list[str]:
        """The variables a send must fill: those declared and those in the body."""
        names = [name for name, _ in self.variables]
        for found in PLACEHOLDER.findall(self.body or ""):
            if found not in names:
                names.append(found)
        return names


@dataclass(frozen=True)
class ChosenTemplate:
    """A template a send goes out as, checked: its id and name, language, the values of
    its variables, and its text as they render it (what the contact reads)."""

    id: str
    name: str
    language: str
    variables: dict[str, str]
    text: str | None
    namespace: str | None = None

    def stored(self) -> dict[str, object]:
        """What the message row and its events keep of it."""
        return {
            "id": self.id,
            "name": self.name,
            "language": self.language,
            "variables": self.variables,
            **({"namespace": self.namespace} if self.namespace else {}),
        }


class TemplateCatalog(Protocol):
    """The templates of one channel, from its provider (cached briefly by the implementer).

    Refuses (``GatewayError``) a channel that is not the account's or not WhatsApp's, an
    account without the provider's integration, and a provider that cannot be reached.
    """

    async def templates(
        self, account_id: str, channel_id: str, *, fresh: bool = False
    ) -> list[Template]:
        """The channel's templates, whatever their approval."""
        ...


class TemplateUse(BaseModel):
    """An approved WhatsApp template to send, with its variables' values."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        min_length=1,
        max_length=200,
        pattern=NUL_FREE,
        description="The template's id, as `GET .../channels/{channel_id}/templates` lists it "
        "(a Twilio Content SID, HX...).",
    )
    variables: dict[
        Annotated[str, Field(pattern=NUL_FREE)], Annotated[str, Field(pattern=NUL_FREE)]
    ] = Field(
        default_factory=dict,
        max_length=MAX_VARIABLES,
        description='Each variable\'s value, by its name: {"1": "Ada", "2": "12 May"}.',
    )


def choose(templates: list[Template], use: TemplateUse) -> ChosenTemplate:
    """The template ``use`` names, checked: known, approved, every variable filled with a
    value and none it does not have. Raises the refusal that says which."""
    found = next((t for t in templates if t.id == use.id), None)
    if found is None:
        approved = [t for t in templates if t.approval == APPROVED]
        listing = ", ".join(f"{t.id} ({t.name}, {t.language})" for t in approved[:LISTED])
        raise UnknownTemplate(
            f"The channel has no template {shown(use.id)!r}. Its approved templates: "
            f"{listing or 'none'}. Nothing was queued."
        )
    if found.approval != APPROVED:
        reason = f" ({found.rejection_reason})" if found.rejection_reason else ""
        raise TemplateNotApproved(
            f"The template {found.name!r} ({found.id}) is {found.approval}{reason}, not "
            "approved: WhatsApp delivers approved templates only. Nothing was queued.",
            fields={"approval": found.approval},
        )
    names = found.variable_names
    missing = [name for name in names if name not in use.variables]
    unknown = [name for name in use.variables if name not in names]
    empty = [name for name in names if name in use.variables and not use.variables[name].strip()]
    long = [name for name, value in use.variables.items() if len(value) > MAX_VALUE]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if empty:
        problems.append(f"empty {', '.join(empty)} (WhatsApp refuses an empty value)")
    if unknown:
        problems.append(f"not the template's: {', '.join(shown(n) for n in unknown[:LISTED])}")
    if long:
        problems.append(f"longer than {MAX_VALUE} characters: {', '.join(long)}")
    if problems:
        raise TemplateVariables(
            f"The variables do not fill the template {found.name!r}: {'; '.join(problems)}. "
            f"It takes {', '.join(names) or 'none'}. Nothing was queued.",
            fields={"variables": names},
        )
    return ChosenTemplate(
        id=found.id,
        name=found.name,
        language=found.language,
        variables={name: use.variables[name] for name in names},
        text=render(found.body, use.variables) if found.body is not None else None,
        namespace=found.namespace,
    )


def render(body: str, variables: dict[str, str]) -> str:
    """The body with each ``{{name}}`` replaced by its value (as the provider renders it)."""
    return PLACEHOLDER.sub(lambda match: variables.get(match.group(1), match.group(0)), body)
