"""``data.strip_html`` (hf_toolkit/core/htmltext.py): the text a reader of the page sees (issue 21.6).

The cases the regular expression got wrong, then a whole web page as a news site serves it (head
with scripts, styles and JSON-LD, navigation, an article with inline markup and entities, a table,
a comment, trailing scripts), cleaned as a recipe with ``strip_html`` and ``normalize_whitespace`` does.
"""

from __future__ import annotations

import json

import pytest

from hf_toolkit.core.data import clean_text, load_splits
from hf_toolkit.core.htmltext import html_to_text
from hf_toolkit.recipe.schema import DataSection


@pytest.mark.parametrize("html, text", [
    ('<script>alert("x")</script>Hello<style>p { color: red }</style>', "Hello"),
    ("5 < 6 and 7 > 3 but a<b", "5 < 6 and 7 > 3 but a<b"),  # not tags: kept as written
    ("if x<y then", "if x<y then"),
    ("caf&eacute;&nbsp;au&nbsp;lait &amp; &#169; &#x2014; AT&T &unknown;", "café au lait & © \u2014 AT&T &unknown;"),
    ("<b>un</b>believable, <a href='/x'>link</a>ed, un&shy;breakable", "unbelievable, linked, unbreakable"),
    ("<p>one</p><p>two</p><h2>three</h2>four<br>five<br/>six", "one\ntwo\nthree\nfour\nfive\nsix"),
    ("<table><tr><th>Team</th><th>Score</th></tr><tr><td>Ajax</td><td>3</td></tr></table>", "Team Score\nAjax 3"),
    ("<!-- hidden -->shown<noscript>Enable JavaScript</noscript><template><p>later</p></template>", "shown"),
    ("<head><title>Title</title><body>after an unclosed head", "after an unclosed head"),
    ("<script>if (a < b && c > d) { x = '</div>'; }</script>after", "after"),
    ("<p>Great&nbsp;movie!</p>\n<br/>Loved   it &amp; more", "Great movie!\nLoved   it & more"),
])
def test_html_to_text(html, text):
    assert html_to_text(html) == text


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Local bakery wins national award | The Daily Example</title>
  <link rel="stylesheet" href="/static/site.css?v=3">
  <style>
    body { font-family: Georgia, serif; }
    .byline > span { color: #666; }
  </style>
  <script async src="https://www.googletagmanager.com/gtag/js?id=G-XXXX"></script>
  <script>
    window.dataLayer = window.dataLayer || [];
    function gtag(){dataLayer.push(arguments);}
    if (window.innerWidth < 600 && document.cookie.indexOf("consent") > -1) { gtag('js', new Date()); }
  </script>
  <script type="application/ld+json">{"@context": "https://schema.org", "@type": "NewsArticle", "headline": "Local bakery"}</script>
</head>
<body class="article-page">
  <!-- begin navigation -->
  <nav class="site-nav"><ul><li><a href="/">Home</a></li><li><a href="/news">News</a></li><li><a href="/food">Food&nbsp;&amp;&nbsp;Drink</a></li></ul></nav>
  <main>
    <article>
      <h1>Local bakery wins national award</h1>
      <p class="byline"><span>By <a href="/staff/jane">Jane Doe</a></span> &middot; <time datetime="2024-03-01">1 March 2024</time></p>
      <p>The <strong>Corner Loaf</strong> bakery on Mill&nbsp;Street was named &ldquo;Best Small Bakery&rdquo; on Friday.
         Owner Ana Silva, who opened the shop in 2019, said the sour<em>dough</em> recipe took &quot;three years&quot; to perfect.</p>
      <p>Judges scored entries from 1 to 10; the winner averaged 9.4 &ndash; more than 2 points above the runner-up (score &lt; 7.5).</p>
      <figure><img src="/img/loaf.jpg" alt="A loaf of bread"><figcaption>The winning loaf.</figcaption></figure>
      <table class="results">
        <tr><th>Bakery</th><th>Score</th></tr>
        <tr><td>Corner Loaf</td><td>9.4</td></tr>
        <tr><td>Rye &amp; Co.</td><td>7.1</td></tr>
      </table>
    </article>
  </main>
  <footer><p>&copy; 2024 The Daily Example. All rights reserved.</p></footer>
  <script src="/static/app.js"></script>
  <script>document.querySelectorAll('a[href^="http"]').forEach(function (a) { a.target = '_blank'; });</script>
</body>
</html>
"""

PAGE_TEXT = (
    "Home News Food & Drink Local bakery wins national award By Jane Doe \u00b7 1 March 2024 "
    "The Corner Loaf bakery on Mill Street was named \u201cBest Small Bakery\u201d on Friday. "
    "Owner Ana Silva, who opened the shop in 2019, said the sourdough recipe took \"three years\" to perfect. "
    "Judges scored entries from 1 to 10; the winner averaged 9.4 \u2013 more than 2 points above the runner-up "
    "(score < 7.5). The winning loaf. Bakery Score Corner Loaf 9.4 Rye & Co. 7.1 "
    "\u00a9 2024 The Daily Example. All rights reserved."
)


def test_a_real_web_page_becomes_its_visible_text(tmp_path):
    assert clean_text(PAGE, strip_html=True, normalize_whitespace=True) == PAGE_TEXT
    lines = [line.strip() for line in html_to_text(PAGE).splitlines() if line.strip()]
    assert lines[:4] == ["Home", "News", "Food & Drink", "Local bakery wins national award"]  # blocks break lines
    path = tmp_path / "pages.jsonl"
    path.write_text(json.dumps({"text": PAGE}) + "\n", encoding="utf-8")
    splits = load_splits(DataSection(train=str(path), strip_html=True, normalize_whitespace=True), ("text",), seed=0)
    assert splits["train"]["text"] == [PAGE_TEXT]
