"""Every text the console shows has its French, and the language is chosen as promised."""

from __future__ import annotations

import ast
from importlib import resources
from pathlib import Path

import pytest
from jinja2 import nodes

from gateway.console import events, guard, i18n, routes, views
from gateway.console.pages import _ENV

CONSOLE = Path(routes.__file__).parent


def _template_texts() -> set[str]:
    texts: set[str] = set()
    for entry in resources.files("gateway.console").joinpath("templates").iterdir():
        tree = _ENV.parse(entry.read_text(encoding="utf-8"))
        for call in tree.find_all(nodes.Call):
            if isinstance(call.node, nodes.Name) and call.node.name == "_" and call.args:
                first = call.args[0]
                if isinstance(first, nodes.Const):
                    texts.add(first.value)
    return texts


def _python_texts() -> set[str]:
    texts: set[str] = set()
    for path in CONSOLE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            named = (isinstance(func, ast.Name) and func.id == "_") or (
                isinstance(func, ast.Attribute) and func.attr == "_"
            )
            first = node.args[0]
            if named and isinstance(first, ast.Constant) and isinstance(first.value, str):
                texts.add(first.value)
    return texts


def test_every_shown_text_has_its_french() -> None:
    shown = (
        _template_texts()
        | _python_texts()
        | set(views.NOTICES.values())
        | set(guard._TITLES.values())
        | {guard.CSRF_REFUSED}
        | set(events.CATEGORIES)
    )
    assert len(shown) > 60
    missing = sorted(text for text in shown if text not in i18n.FRENCH)
    assert missing == []


def test_statuses_and_actions_have_words_in_both_languages() -> None:
    assert i18n.status_name("en", "keys_generated") == "keys generated"
    assert i18n.status_name("fr", "keys_generated") == "clés générées"
    assert i18n.action_name("fr", "Create") == "Création"
    assert i18n.translator("fr")("Create") == "Créer"


@pytest.mark.parametrize(
    ("cookie", "accept", "chosen"),
    [
        (None, "fr-FR,fr;q=0.9", "fr"),
        (None, "de-DE,en;q=0.8", "en"),
        (None, "", "en"),
        ("en", "fr", "en"),
        ("fr", "en", "fr"),
        ("xx", "de", "en"),
    ],
)
def test_the_language_is_the_admins_pick_else_the_browsers(
    cookie: str | None, accept: str, chosen: str
) -> None:
    assert i18n.choose(cookie, accept) == chosen
