"""Sphinx extension: drop a script that a page would load twice.

sphinx-thebe (which Jupyter Book always adds) registers its configuration script on every
`env-before-read-docs` event, and a Jupyter Book build fires that event more than once, so each page
declared ``const THEBE_JS_URL`` twice and the browser reported an uncaught SyntaxError on every page
(sphinx-togglebutton's selector script is repeated the same way, harmlessly).
"""

from __future__ import annotations


def _key(script) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    # An inline script's filename is None or "" depending on who added it: both mean "no file".
    filename = getattr(script, "filename", str(script)) or ""
    return (str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def unique_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
