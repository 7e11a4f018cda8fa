"""The book's own Sphinx extension (``book/_config.yml``: ``sphinx.extra_extensions``).

sphinx-thebe 0.3.1 registers its inline configuration script (``const THEBE_JS_URL = …``) both in
Sphinx's registry and with the HTML builder, and Sphinx 7.4 emits both: every page then logged
``SyntaxError: Identifier 'THEBE_JS_URL' has already been declared`` in the browser console. The
book executes nothing, so thebe is never used; each page keeps one copy of every script.
"""

from __future__ import annotations


def _key(js) -> tuple:
    attrs = getattr(js, "attributes", None) or {}
    name = getattr(js, "filename", js)  # '' and None both mean an inline script (body in attributes)
    return (str(name or ""), tuple(sorted((k, str(v)) for k, v in attrs.items())))


def dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    seen, out = set(), []
    for js in context.get("script_files", []) or []:
        k = _key(js)
        if k not in seen:
            seen.add(k)
            out.append(js)
    context["script_files"] = out


def setup(app):
    app.connect("html-page-context", dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
