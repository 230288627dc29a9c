"""The book's own Sphinx extension: notebook downloads and launch buttons for its chapters.

Listed in ``_config.yml`` under ``sphinx: local_extensions``. It does three things:

- every chapter page offers its executed notebook for download (``.ipynb``, next to the
  ``.md`` source and the PDF in the download menu), even when no launch button is
  configured (the theme only does so when one is). The notebook is one a reader can trust
  in Jupyter (:func:`downloadable_notebook`):

  * its outputs are those of the run, each once: they are read from the execution cache
    (myst-nb's ``merge_streams`` merges a cell's printed text for the page *in place*, in
    the first stream output, and then writes the notebook with the originals still after
    it, so the file that myst-nb writes shows text twice), consecutive printouts of a
    stream are merged as Jupyter merges them (:func:`merge_streams`), and the glue data
    hidden from the page (``glue(..., display=False)``) stays hidden;
  * its Markdown has no MyST syntax that Jupyter would show as literal text
    (:func:`markdown_for_jupyter`): citations become author–year text
    (``{cite:t}`` → "Ioffe and Szegedy (2015)", ``{cite:p}`` → "(Ioffe and Szegedy,
    2015)") with a "References" list of the works cited at the end of the notebook,
    cross-references (``{doc}``, ``{ref}``, ``{numref}``, ``{eq}``, ``{download}``) become
    Markdown links to the online book's pages (relative links like ``scaling.html#label``
    while ``html: baseurl:`` is unset), ``{glue:text}`` becomes the glued value, other roles
    plain text or inline code, directives (``{note}``, ``{admonition}``, ...) plain
    Markdown (a blockquote with the title), and ``(label)=`` targets HTML anchors.
    Cells tagged ``remove-cell`` stay in the download, as in the notebook myst-nb writes:
    the download's code is the chapter's code;
- launch buttons need the course's public repository: ``repository: url:`` in
  ``_config.yml`` (``https://github.com/<org>/<repo>``). While it is empty, the book is built
  without launch buttons, instead of failing (sphinx-book-theme cannot build them without a
  repository) or pointing readers to a repository that is not the course's;
- each script is included in a page once: with Sphinx 7.4, sphinx-thebe and
  sphinx-togglebutton register theirs twice, and the second ``const THEBE_JS_URL`` is a
  JavaScript error on every page.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import quote

import nbformat
from docutils.nodes import make_id
from jupyter_cache import get_cache
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ConfigError
from sphinx.util import logging
from sphinx.util.osutil import relative_uri

logger = logging.getLogger(__name__)

# The launch providers of sphinx-book-theme that need a repository to launch from.
_LAUNCH_KEYS = ("binderhub_url", "jupyterhub_url", "colab_url", "deepnote_url")


def _check_repository(app: Sphinx, config: Config) -> None:
    """Without a repository URL, switch off the launch buttons, which need one."""
    options = config.html_theme_options
    url = (options.get("repository_url") or "").strip()
    if not url:
        options["launch_buttons"] = {k: v for k, v in options.get("launch_buttons", {}).items()
                                     if k not in _LAUNCH_KEYS}
    elif not url.startswith("https://github.com/") or len(url.rstrip("/").split("/")) != 5:
        raise ConfigError(f"repository: url: in _config.yml must look like "
                          f"https://github.com/<org>/<repo> (launch buttons need GitHub), got {url!r}")


# ---------------------------------------------------------------------------------------------
# Outputs: each once


def overwrite_chars(text: str) -> str:
    """The text a terminal or Jupyter shows for ``text``: a carriage return goes back to the
    start of the line (what follows overwrites what was there), a backspace erases the
    character before it. JupyterLab stores the stream text of a cell so."""
    if "\r" not in text and "\b" not in text:
        return text
    lines = []
    for line in re.sub(r"\r+\n", "\n", text).split("\n"):
        shown = ""
        for part in line.split("\r"):
            shown = part + shown[len(part):]
        while re.search(r"[^\x08]\x08", shown):                    # a backspace erases
            shown = re.sub(r"[^\x08]\x08", "", shown)
        lines.append(shown.replace("\x08", ""))
    return "\n".join(lines)


def merge_streams(outputs: Iterable[dict]) -> list[nbformat.NotebookNode]:
    """The outputs of a cell, with consecutive stream outputs of the same stream (stdout,
    stderr) merged into one, as Jupyter merges them: the printed text, exactly once and in
    order with the figures between. The outputs given are not changed."""
    merged: list[nbformat.NotebookNode] = []
    for output in outputs:
        output = copy.deepcopy(nbformat.from_dict(output))
        last = merged[-1] if merged else None
        if (output.get("output_type") == "stream" and last is not None
                and last.get("output_type") == "stream" and last.get("name") == output.get("name")):
            last["text"] += output.get("text", "")
        else:
            merged.append(output)
    for output in merged:
        if output.get("output_type") == "stream":
            output["text"] = overwrite_chars(output.get("text", ""))
    return merged


def drop_coalesced_copies(outputs: Iterable[dict]) -> list[nbformat.NotebookNode]:
    """Undo what myst-nb's ``merge_streams`` leaves in a notebook it executed: it merges all
    of a cell's text of a stream into the first output of that stream, in place, and keeps
    the originals after it, so that the text is there twice. Where the first output ends
    with the text of the later ones (as myst-nb merges it), the later ones are dropped; other
    outputs are returned as they are."""
    from myst_nb.core.utils import coalesce_streams

    outputs = [copy.deepcopy(nbformat.from_dict(o)) for o in outputs]
    drop: set[int] = set()
    for name in {o.get("name") for o in outputs if o.get("output_type") == "stream"}:
        indices = [i for i, o in enumerate(outputs) if o.get("output_type") == "stream" and o.get("name") == name]
        first, rest = indices[0], indices[1:]
        if not rest:
            continue
        printed = [copy.deepcopy(outputs[i]) for i in rest if outputs[i].get("text", "").rstrip()]
        suffix = coalesce_streams(printed)[0]["text"] if printed else ""
        if outputs[first].get("text", "").endswith(suffix):
            drop.update(rest)
    return [o for i, o in enumerate(outputs) if i not in drop]


_GLUE_PREFIX = "application/papermill.record/"


def glue_data(notebook: dict) -> dict[str, dict]:
    """The values that the notebook's cells ``glue`` (myst-nb), by name: their MIME bundles."""
    data = {}
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            scrapbook = output.get("metadata", {}).get("scrapbook")
            if scrapbook and "name" in scrapbook:
                prefix = scrapbook.get("mime_prefix", "")
                data[scrapbook["name"]] = {k[len(prefix):] if k.startswith(prefix) else k: v
                                           for k, v in output.get("data", {}).items()}
    return data


def _is_hidden_glue(output: dict) -> bool:
    """Glued with ``display=False``: the page does not show it, and Jupyter has no renderer
    for its MIME types (it would show "No renderer could be found")."""
    scrapbook = output.get("metadata", {}).get("scrapbook") or {}
    return bool(scrapbook.get("mime_prefix")) or any(k.startswith(_GLUE_PREFIX) for k in output.get("data", {}))


# ---------------------------------------------------------------------------------------------
# Markdown: no MyST syntax left

# A role, ``{name}`content``` (the content in a run of backticks), or an inline code span,
# which is left as it is (its text is code, not a role).
_ROLE_OR_CODE = re.compile(
    r"\{(?P<name>[A-Za-z0-9_+.:-]+)\}(?P<ticks>`+)(?P<content>.+?)(?<!`)(?P=ticks)(?!`)"
    r"|(?P<code>`+).+?(?<!`)(?P=code)(?!`)", re.S)
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,}|:{3,})(?P<info>.*)$")
_DIRECTIVE_INFO = re.compile(r"^\s*\{(?P<name>[A-Za-z0-9_+.:-]+)\}\s*(?P<argument>.*)$")
_TARGET = re.compile(r"^\s*\((?P<label>[^()\s]+)\)=\s*$")
_MYST_COMMENT = re.compile(r"^\s*%")
_MATH_LABEL = re.compile(r"^(?P<math>.*\$\$)\s*\((?P<label>[^()\s]+)\)\s*$")
_ADMONITIONS = {"note": "Note", "tip": "Tip", "hint": "Hint", "important": "Important",
                "warning": "Warning", "caution": "Caution", "attention": "Attention",
                "danger": "Danger", "error": "Error", "seealso": "See also", "todo": "To do"}
_DROPPED_DIRECTIVES = {"bibliography", "toctree", "tableofcontents", "glue", "glue:", "glue:any",
                       "glue:figure", "glue:math", "code-cell", "raw"}
_CODE_DIRECTIVES = {"code", "code-block", "sourcecode"}

Resolver = Callable[[str, str], str]


def split_title_target(content: str) -> tuple[str | None, str]:
    """``"text <target>"`` → ``("text", "target")``; ``"target"`` → ``(None, "target")``."""
    match = re.fullmatch(r"(?P<title>.*?)\s*<(?P<target>[^<>]+)>", content.strip(), flags=re.S)
    if match and match["title"]:
        return match["title"], match["target"].strip()
    return None, content.strip()


def inline_code(text: str) -> str:
    """``text`` as a Markdown code span, with a fence longer than any backticks in it."""
    ticks = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def convert_roles(text: str, resolve: Resolver) -> tuple[str, int]:
    """``text`` with each role replaced by ``resolve(name, content)`` (code spans are left
    alone), and the number of roles replaced."""
    count = 0

    def replace(match: re.Match) -> str:
        nonlocal count
        if match["name"] is None:
            return match[0]
        count += 1
        return resolve(match["name"], match["content"])

    return _ROLE_OR_CODE.sub(replace, text), count


def _directive_options(body: list[str]) -> tuple[dict[str, str], list[str]]:
    """The options of a directive (``:key: value`` lines or a ``---`` YAML block at the top of
    its body) and the rest of the body."""
    options: dict[str, str] = {}
    if body and body[0].strip() == "---" and "---" in (line.strip() for line in body[1:]):
        end = next(i for i, line in enumerate(body[1:], 1) if line.strip() == "---")
        for line in body[1:end]:
            key, _, value = line.partition(":")
            options[key.strip()] = value.strip()
        return options, body[end + 1:]
    rest = list(body)
    while rest and re.match(r"^\s*:[\w-]+:", rest[0]):
        key, value = re.match(r"^\s*:([\w-]+):\s*(.*)$", rest.pop(0)).groups()
        options[key] = value
    return options, rest


def _blockquote(title: str, body: str) -> str:
    """``body`` (Markdown) as a blockquote, under ``title`` in bold when there is one."""
    lines = [f"> **{title}**"] if title else []
    if body.strip():
        if lines:
            lines.append(">")
        lines += [f"> {line}".rstrip() for line in body.strip("\n").split("\n")]
    return "\n".join(lines)


def _directive_markdown(name: str, argument: str, body: list[str], resolve: Resolver) -> tuple[str, int]:
    """A directive as plain Markdown, and the number of roles converted in it."""
    options, rest = _directive_options(body)
    if name == "glue:md":                        # a glued Markdown table: its text
        return resolve(name, argument.strip()), 1
    if name in _DROPPED_DIRECTIVES:
        return "", 0
    if name in _CODE_DIRECTIVES:
        fence = "`" * max(3, max((len(r) for r in re.findall(r"`{3,}", "\n".join(rest))), default=0) + 1)
        return "\n".join([f"{fence}{argument.strip()}", *rest, fence]), 0
    if name == "math":
        return "\n".join(["$$", *rest, "$$"]), 0
    inner, count = markdown_for_jupyter("\n".join(rest), resolve, _counted=True)
    argument, n = convert_roles(argument.strip(), resolve)
    count += n
    if name in ("figure", "image"):
        alt = options.get("alt", "")
        image = f"![{alt}]({argument})"
        return (f"{image}\n\n*{inner.strip()}*" if inner.strip() else image), count
    if name in _ADMONITIONS:
        title = argument or _ADMONITIONS[name]
    elif name == "admonition":
        title = argument
    else:
        title = argument or options.get("title", "")
    return _blockquote(title, inner), count


def markdown_for_jupyter(source: str, resolve: Resolver, _counted: bool = False):
    """MyST Markdown as Markdown that Jupyter shows as the book does: roles replaced by
    ``resolve(name, content)`` (a string of Markdown), directives as plain Markdown,
    ``(label)=`` targets as HTML anchors, MyST comments (``% ...``) and equation labels
    dropped. Code blocks are left as they are. Returns the Markdown (with ``_counted``: and
    the number of roles converted)."""
    lines = source.split("\n")
    out: list[str] = []          # the Markdown, line by line
    text: list[str] = []         # lines of text not yet converted (roles may span lines)
    count = 0
    after_block = False

    def flush() -> None:
        nonlocal count
        if text:
            converted, n = convert_roles("\n".join(text), resolve)
            out.extend(converted.split("\n"))
            count += n
            text.clear()

    def block(markdown: str) -> None:
        """A block (directive, code, anchor) between blank lines (an HTML block, the anchor,
        ends only at a blank line)."""
        nonlocal after_block
        flush()
        if out and out[-1].strip():
            out.append("")
        out.extend(markdown.split("\n"))
        after_block = True

    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        fence = _FENCE.match(line)
        directive = _DIRECTIVE_INFO.match(fence["info"]) if fence else None
        if fence and (directive or fence["fence"][0] != ":"):      # colon fences are directives only
            char, length = fence["fence"][0], len(fence["fence"])
            closing = re.compile(rf"^ {{0,3}}{re.escape(char)}{{{length},}}\s*$")
            end = next((j for j in range(i, len(lines)) if closing.match(lines[j])), len(lines))
            body, i = lines[i:end], end + 1
            if directive:
                markdown, n = _directive_markdown(directive["name"], directive["argument"], body, resolve)
                count += n
                if markdown:
                    block(markdown)
            else:                                                    # a code block: as it is
                block("\n".join([line, *body, *lines[end:end + 1]]))
            continue
        target = _TARGET.match(line)
        if target:
            block(f'<a id="{target["label"]}"></a>')
            continue
        if _MYST_COMMENT.match(line):
            continue
        if after_block and line.strip():
            text.append("")
        after_block = False
        math = _MATH_LABEL.match(line)
        text.append(math["math"] if math else line)
    flush()
    markdown = "\n".join(out)
    return (markdown, count) if _counted else markdown


# ---------------------------------------------------------------------------------------------
# Citations: author–year text and a list of references


class Citations:
    """The works of the bibliography, cited by author and year: ``text(role, keys)`` is what
    a ``{cite:<role>}`` role shows in the notebook ("Ioffe and Szegedy (2015)" for ``t``,
    "(Ioffe and Szegedy, 2015)" for ``p``; several works in the book's order, parenthetical
    ones separated by semicolons) and ``reference(key)`` the full entry for the
    "References" list, in Markdown. The names are formatted by sphinxcontrib-bibtex's
    author–year style (the book's, in parentheses instead of brackets)."""

    def __init__(self, entries: dict, person_style=None):
        from sphinxcontrib.bibtex.style.referencing import BracketStyle, PersonStyle
        from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle

        self.entries = entries   # key -> (pybtex Entry, pybtex FormattedEntry), in the bibliography's order
        self.style = AuthorYearReferenceStyle(
            bracket_parenthetical=BracketStyle(left="(", right=")", sep="; "),
            bracket_textual=BracketStyle(left="(", right=")", sep=", ", sep2=" and ", last_sep=", and "),
            bracket_author=BracketStyle(left="(", right=")", sep=", ", sep2=" and ", last_sep=", and "),
            bracket_year=BracketStyle(left="(", right=")", sep="; "),
            bracket_label=BracketStyle(left="(", right=")", sep="; "),
            person=person_style or PersonStyle())

    @classmethod
    def from_bibfile(cls, path: Path, style: str = "alpha") -> Citations:
        """The works of a ``.bib`` file, formatted by a pybtex style (the book's default)."""
        import pybtex.database
        import pybtex.plugin
        import sphinxcontrib.bibtex  # noqa: F401  (registers its pybtex plugins)

        data = pybtex.database.parse_file(str(path))
        formatter = pybtex.plugin.find_plugin("pybtex.style.formatting", style)()
        formatted = formatter.format_entries(data.entries.values())        # sorted as the style sorts
        return cls({entry.key: (data.entries[entry.key], entry) for entry in formatted})

    @classmethod
    def from_sphinx(cls, app: Sphinx) -> Citations:
        """The works that sphinxcontrib-bibtex loaded for the book, formatted for its
        bibliography (none without sphinxcontrib-bibtex)."""
        try:
            domain = app.env.get_domain("cite")
        except Exception:                  # sphinx.errors.ExtensionError: no bibliography
            return cls({})
        entries = {c.key: (c.entry, c.formatted_entry) for c in domain.citations
                   if domain.bibliographies[c.bibliography_key].list_ == "citation"}
        return cls(entries, getattr(getattr(domain, "reference_style", None), "person", None))

    @staticmethod
    def targets(content: str) -> list:
        """The citation targets of a role's content (keys separated by commas or semicolons,
        each with an optional ``{pre-text}`` and ``{post-text}``)."""
        from sphinxcontrib.bibtex.citation_target import parse_citation_targets

        return list(parse_citation_targets(",".join(k.strip() for k in re.split(r"[,;]", content) if k.strip())))

    def keys(self, content: str) -> list[str]:
        return [target.key for target in self.targets(content)]

    def text(self, role: str, content: str) -> str:
        """The author–year text of ``{cite:<role>}`content```; raises KeyError for a key
        that is not in the bibliography."""
        from sphinxcontrib.bibtex.style.referencing import format_references
        from sphinxcontrib.bibtex.style.template import SphinxReferenceInfo

        role = role if role in self.style.role_style else "p"
        order = {key: i for i, key in enumerate(self.entries)}      # the book's: its bibliography's
        targets = sorted(self.targets(content), key=lambda t: order[t.key])
        references = [(self.entries[t.key][0], self.entries[t.key][1],
                       SphinxReferenceInfo(builder=None, fromdocname="", todocname="", citation_id="",
                                           title=None, pre_text=t.pre, post_text=t.post))
                      for t in targets]
        return str(format_references(self.style, role, references))       # str(): the plain text

    def reference(self, key: str) -> str:
        """The full entry of ``key``, in Markdown on one line."""
        text = self.entries[key][1].text.render_as("markdown")
        return " ".join(text.replace("\\url ", "").split())

    def references(self, keys: Iterable[str]) -> str:
        """A "References" section listing the works ``keys`` (each once), by author and year."""
        keys = list(dict.fromkeys(keys))
        items = sorted(keys, key=lambda k: (self.text("p", k).casefold(), k))
        return "## References\n\n" + "\n".join(f"- {self.reference(k)}" for k in items)


# ---------------------------------------------------------------------------------------------
# The notebook as a whole


def downloadable_notebook(notebook: dict, resolve: Resolver, references: Callable[[], str] | None = None,
                          ) -> tuple[nbformat.NotebookNode, int]:
    """A copy of an executed notebook as a reader downloads it: each stream's text once
    (:func:`merge_streams`), hidden glue data left out, Markdown without MyST syntax
    (:func:`markdown_for_jupyter`, roles resolved by ``resolve``), then a last Markdown cell
    from ``references()`` (called after every cell was converted) when it returns text.
    Returns the notebook and the number of roles converted."""
    notebook = copy.deepcopy(nbformat.from_dict(notebook))
    count = 0
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = merge_streams(o for o in cell.get("outputs", []) if not _is_hidden_glue(o))
        elif cell.cell_type == "markdown":
            cell.source, n = markdown_for_jupyter(cell.source, resolve, _counted=True)
            count += n
    text = references() if references else ""
    if text:
        cell = nbformat.v4.new_markdown_cell(text)
        if (notebook.nbformat, notebook.nbformat_minor) < (4, 5):   # cell ids came with 4.5
            cell.pop("id", None)
        notebook.cells.append(cell)
    return notebook, count


class _BookResolver:
    """Resolves the roles of one chapter's Markdown for its download, with what Sphinx knows
    of the book: its citations, labels, page titles, equation and figure numbers, and the
    chapter's glued values. Records the works cited, for the References list."""

    def __init__(self, app: Sphinx, docname: str, citations: Citations, glue: dict[str, dict]):
        self.app, self.docname, self.citations, self.glue = app, docname, citations, glue
        self.cited: list[str] = []
        self.base = (app.config.html_baseurl or "").strip()

    # links ---------------------------------------------------------------------------------
    def url(self, docname: str, anchor: str = "") -> str:
        builder = self.app.builder
        if self.base:
            uri = self.base.rstrip("/") + "/" + builder.get_target_uri(docname)
        else:                          # the same page: its name (a notebook has not its anchors)
            uri = builder.get_relative_uri(self.docname, docname) or \
                builder.get_target_uri(docname).rsplit("/", 1)[-1]
        return uri + (f"#{anchor}" if anchor else "")

    def link(self, text: str, url: str) -> str:
        text = text.replace("[", r"\[").replace("]", r"\]")
        return f"[{text}]({quote(url, safe=':/#?&=%~+@!$,;')})"

    def warn(self, message: str) -> None:
        logger.warning(f"{self.docname}.ipynb (download): {message}", type="sphinx_course", subtype="download")

    def docname_of(self, target: str) -> str:
        target = re.sub(r"\.(md|ipynb|rst)$", "", target.strip())
        if target.startswith("/"):
            return target.lstrip("/")
        base = self.docname.rsplit("/", 1)[0] + "/" if "/" in self.docname else ""
        parts: list[str] = []
        for part in (base + target).split("/"):
            if part == "..":
                parts.pop() if parts else None
            elif part not in ("", "."):
                parts.append(part)
        return "/".join(parts)

    # roles ---------------------------------------------------------------------------------
    def __call__(self, name: str, content: str) -> str:
        name = name.lower()
        title, target = split_title_target(content)
        if name == "cite" or name.startswith("cite:"):
            return self.cite(name.partition(":")[2], content)
        if name == "doc":
            docname = self.docname_of(target)
            if docname not in self.app.env.titles:
                self.warn(f"unknown document {target!r} in {{doc}}")
                return title or target
            return self.link(title or self.app.env.titles[docname].astext(), self.url(docname))
        if name in ("ref", "numref"):
            return self.ref(name, title, target)
        if name == "eq":
            return self.eq(title, target)
        if name == "download":
            return self.download(title, target)
        if name.startswith("glue"):
            return self.glued(name, target)
        if name == "math":
            return f"${content}$"
        if name in ("sub", "subscript"):
            return f"<sub>{content}</sub>"
        if name in ("sup", "superscript"):
            return f"<sup>{content}</sup>"
        if name == "abbr":
            match = re.fullmatch(r"(?P<short>.*?)\s*\((?P<long>.*)\)", content.strip(), flags=re.S)
            return f'<abbr title="{match["long"]}">{match["short"]}</abbr>' if match else content
        if name in ("code", "literal", "samp", "kbd", "file", "command", "program", "envvar",
                    "option", "regexp", "mimetype", "makevar") or ":" in name:
            shown = title or target
            if shown.startswith("~"):
                shown = shown[1:].rsplit(".", 1)[-1]
            return inline_code(shown.lstrip("!."))
        return title or target          # {term}, {guilabel}, {index}, ... and any other role: its text

    def cite(self, role: str, content: str) -> str:
        keys = self.citations.keys(content)
        missing = [k for k in keys if k not in self.citations.entries]
        if missing:
            self.warn(f"citation key(s) not in the bibliography: {', '.join(missing)}")
            return content
        self.cited.extend(keys)
        return self.citations.text(role, content)

    def ref(self, role: str, title: str | None, label: str) -> str:
        std = self.app.env.get_domain("std")
        key = label.lower()
        if key in std.labels:
            docname, labelid, section = std.labels[key]
        elif key in std.anonlabels:
            (docname, labelid), section = std.anonlabels[key], None
        else:
            self.warn(f"unknown label {label!r} in {{{role}}}")
            return title or label
        text = title or section or label
        if role == "numref":
            number = next((".".join(map(str, numbers))
                           for figtype, ids in self.app.env.toc_fignumbers.get(docname, {}).items()
                           for id_, numbers in ids.items() if id_ == labelid), None)
            if number is not None:
                figtype = next(t for t, ids in self.app.env.toc_fignumbers[docname].items() if labelid in ids)
                fmt = title or self.app.config.numfig_format.get(figtype, "%s")
                text = fmt.replace("%s", number).replace("{number}", number).replace("{name}", section or "")
        return self.link(text, self.url(docname, labelid))

    def eq(self, title: str | None, label: str) -> str:
        equations = getattr(self.app.env.get_domain("math"), "equations", {})
        if label not in equations:
            self.warn(f"unknown equation {label!r} in {{eq}}")
            return title or label
        docname, number = equations[label]
        fmt = self.app.config.math_eqref_format or "({number})"
        return self.link(title or fmt.format(number=number), self.url(docname, make_id(f"equation-{label}")))

    def download(self, title: str | None, target: str) -> str:
        source = self.docname_of(target) if not target.startswith("/") else target.lstrip("/")
        for filename, (_, dest) in getattr(self.app.env, "dlfiles", {}).items():
            if filename == source or filename == target.lstrip("/"):
                page = self.app.builder.get_target_uri(self.docname)
                url = (self.base.rstrip("/") + "/_downloads/" + dest if self.base
                       else relative_uri(page, "_downloads/" + dest))
                return self.link(title or Path(target).name, url)
        return title or Path(target).name

    def glued(self, role: str, content: str) -> str:
        from myst_nb.core.variables import format_plain_text

        key, fmt = (content.rsplit(":", 1) + ["s"])[:2] if role == "glue:text" else (content, "")
        key = key.split("::", 1)[-1]
        data = self.glue.get(key)
        if data is None or "text/plain" not in data:
            self.warn(f"no glued value {key!r} for {{{role}}}")
            return key
        if role == "glue:md" and "text/markdown" in data:
            return data["text/markdown"]
        try:
            return format_plain_text(data["text/plain"], fmt)
        except Exception:                           # as myst-nb: the text when it cannot format it
            return data["text/plain"]

    def references(self) -> str:
        return self.citations.references(self.cited) if self.cited else ""


# ---------------------------------------------------------------------------------------------
# Sphinx events


def _executed_notebook(app: Sphinx, pagename: str) -> nbformat.NotebookNode | None:
    """The chapter as myst-nb executed it, with the outputs of the run, or None for a page it
    did not execute. The outputs come from the execution cache when the book uses one (myst-nb
    writes its notebook without them when it took the chapter from the cache, and with its
    page's stream merging half done in them when it executed it), else from myst-nb's
    notebook with that merging undone."""
    path = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not path.is_file():
        return None
    notebook = nbformat.read(path, as_version=4)
    if app.config.nb_execution_mode == "cache":
        bare = copy.deepcopy(notebook)
        for cell in bare.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        try:
            # myst-nb's cache, as it resolved it (by default _build/.jupyter_cache)
            cache = getattr(getattr(app.env, "mystnb_config", None), "execution_cache_path", "") \
                or app.config.nb_execution_cache_path or ".jupyter_cache"
            _, cached = get_cache(cache).merge_match_into_notebook(bare)
            return cached
        except KeyError:                                      # not in the cache: myst-nb's outputs
            pass
    for cell in notebook.cells:
        if cell.cell_type == "code" and cell.metadata.get(app.config.nb_cell_metadata_key, {}) \
                .get("merge_streams", app.config.nb_merge_streams):
            cell.outputs = drop_coalesced_copies(cell.get("outputs", []))
    return notebook


def _is_notebook(app: Sphinx, pagename: str) -> bool:
    return "kernelspec" in app.env.metadata.get(pagename, {})


def _offer_notebook(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Add a chapter's executed notebook (``_sources/<page>.ipynb``) to its download menu."""
    if _is_notebook(app, pagename):
        context["ipynb_source"] = f"{pagename}.ipynb"


def _write_notebooks(app: Sphinx, exception) -> None:
    """Write the executed notebooks, as readers download them (:func:`downloadable_notebook`),
    into ``_sources/``, once every page is written (the theme's launch buttons copy myst-nb's
    file there while writing a page, outputs or not)."""
    if exception is not None or app.builder.format != "html":
        return
    citations = None
    for pagename in sorted(app.env.found_docs):
        notebook = _executed_notebook(app, pagename) if _is_notebook(app, pagename) else None
        if notebook is None:
            continue
        if citations is None:
            citations = Citations.from_sphinx(app)
        resolver = _BookResolver(app, pagename, citations, glue_data(notebook))
        download, count = downloadable_notebook(notebook, resolver, resolver.references)
        logger.info(f"{pagename}.ipynb for download: {count} roles converted, "
                    f"{len(set(resolver.cited))} works cited")
        target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(download, target)


COURSE_CSS = "course.css"


def _add_css(app: Sphinx) -> None:
    """The book's own style sheet (``tools/static/course.css``): printouts sized so that a line
    of 88 characters fits the text column."""
    static = str(Path(__file__).parent / "static")
    if static not in app.config.html_static_path:
        app.config.html_static_path.append(static)
    app.add_css_file(COURSE_CSS)


def _scripts_once(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Drop the second copy of a script (same file, or same inline body) from a page."""
    unique, seen = [], set()
    for script in context.get("script_files", []):
        # the copies differ only in filename None vs "" (registered before vs after the builder)
        key = (str(getattr(script, "filename", script) or ""),
               tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", _add_css)
    app.connect("config-inited", _check_repository)
    app.connect("html-page-context", _scripts_once)
    app.connect("html-page-context", _offer_notebook, priority=500)   # before the theme's buttons (501)
    app.connect("build-finished", _write_notebooks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
