"""HTML to plain text, for ``data.strip_html``: the text a reader of the page sees.

Parsed with the standard library's :class:`html.parser.HTMLParser` (no regular expression guesses
at what a tag is), so:

- the content of ``script``, ``style``, ``head`` (title, meta), ``template`` and ``noscript`` is
  dropped, as are comments, doctypes and processing instructions;
- text that is not a tag stays as written: ``5 < 6 and 7 > 3`` keeps both signs, and a ``<`` that
  no ``>`` closes (``a<b`` at the end of a text) is text, not an unfinished tag;
- entities become the characters they name (``&amp;`` -> ``&``, ``&#169;`` -> ``©``), and the
  no-break spaces (``&nbsp;``) plain spaces, soft hyphens (``&shy;``) nothing; an unknown entity
  (``&foo;``) and a bare ``&`` (``AT&T``) stay as written;
- words break only where the page breaks them: at block elements (paragraphs, headings, list
  items, line breaks, table rows: a newline; table cells: a space), never at inline ones
  (``<b>un</b>believable`` -> ``unbelievable``).

A ``<`` followed by a letter and later closed by ``>`` is a tag, as in a browser (``a<b and c>d``
reads ``ad``). Used by :func:`hf_toolkit.core.data.clean_text`; whitespace is left as the page has
it (``data.normalize_whitespace`` collapses it).
"""

from __future__ import annotations

from html import unescape
from html.parser import HTMLParser

# Elements whose content a reader never sees as text.
HIDDEN = frozenset({"script", "style", "head", "template", "noscript"})
# Elements that start a new line of text (HTML's block-level and line-breaking elements).
BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "body", "br", "caption", "dd", "details", "dialog", "div", "dl",
    "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
    "hgroup", "hr", "html", "li", "main", "nav", "ol", "option", "p", "pre", "section", "summary", "table",
    "tbody", "tfoot", "thead", "tr", "ul",
})
# Table cells separate words on one line.
CELLS = frozenset({"td", "th"})
# Characters an entity names that are spacing or invisible, as ordinary text has them.
PLAIN = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2007": " ", "\u00ad": None})


def html_to_text(text: str) -> str:
    """The visible text of an HTML fragment or page (see the module docstring)."""
    # Everything from the first '<' after the last '>' can hold no complete tag: it is text.
    # (Python versions differ on how they end an unfinished tag, so it never reaches the parser.)
    tail_start = text.find("<", text.rfind(">") + 1)
    head, tail = (text, "") if tail_start == -1 else (text[:tail_start], text[tail_start:])
    parser = _TextParser()
    parser.feed(head)
    parser.close()
    if tail:
        parser.handle_data(unescape(tail))
    return "".join(parser.pieces).translate(PLAIN)


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self._break = ""  # the separator a block or cell boundary owes the next text
        self._hidden: list[str] = []  # open hidden elements, innermost last

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "body":  # a head whose end tag was left out ends where the body starts
            self._hidden.clear()
        if self._hidden:
            if tag == self._hidden[-1] or tag in HIDDEN:
                self._hidden.append(tag)
            return
        if tag in HIDDEN:
            self._hidden.append(tag)
        self._boundary(tag)

    def handle_startendtag(self, tag: str, attrs) -> None:  # <br/>, <img/>: nothing to close
        if not self._hidden:
            self._boundary(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._hidden:
            if tag in self._hidden:
                del self._hidden[len(self._hidden) - 1 - self._hidden[::-1].index(tag):]
            return
        self._boundary(tag)

    def handle_data(self, data: str) -> None:
        if self._hidden or not data:
            return
        if self._break and self.pieces and not self.pieces[-1][-1:].isspace() and not data[:1].isspace():
            self.pieces.append(self._break)
        self._break = ""
        self.pieces.append(data)

    def _boundary(self, tag: str) -> None:
        if tag in BLOCKS:
            self._break = "\n"
        elif tag in CELLS and not self._break:
            self._break = " "
