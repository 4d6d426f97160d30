"""The single page: its frame is rendered here, the form is built in the browser from /api/schema."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from .. import __version__
from .i18n import TABLE, pick_language, translator

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> str:
    """The studio page in the remembered (or the browser's) language."""
    lang = pick_language(request.cookies.get("studio_lang"), request.accept_languages.best_match(list(TABLE)))
    return render_template("index.html", lang=lang, t=translator(lang), table=TABLE, version=__version__)
