"""The single page: its frame is rendered here, the form is built in the browser from /api/schema."""

from __future__ import annotations

from flask import Blueprint, render_template

from .. import __version__
from .i18n import TABLE, page_language, translator

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> str:
    """The studio page in the remembered (or the browser's) language."""
    lang = page_language()
    return render_template("index.html", lang=lang, t=translator(lang), table=TABLE, version=__version__)
