"""Nothing a user sends can fool the others (real browser): links, uploaded file names and checkpoint metadata stay text.

A classroom shares one server, so a crafted link or checkpoint must not put a live link, a remote
image, an emoji or typeset maths into anyone's page, and the page itself must never ask a host other
than the app's own for anything (no fonts, icons or scripts from elsewhere).
"""

from __future__ import annotations

from urllib.parse import urlencode, urlparse

import pytest

from tests.browser import VIEWPORT, exceptions, remove_uploads, wait_idle, wait_plot
from tests.browser.conftest import ARTIFACTS
from transformer.api import build_model
from transformer.checkpoints.format import save_checkpoint
from transformer.checkpoints.tokenizer import train_tokenizer
from transformer.data.toy_english import generate_corpus
from transformer.model.config import ModelConfig

pytestmark = pytest.mark.browser

LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
HOSTILE = (
    "[click](http://evil.example/x) ![i](http://evil.example/i.png) <img src=http://evil.example/y> "
    '<a href="http://evil.example">a</a> :rocket: $x^2$ **b**'
)
# One kind of markup at the start of each parameter, so that the part a warning quotes (20-40 characters) holds it.
LINK = {
    "text": HOSTILE,
    "target": HOSTILE,
    "checkpoint": '[click](http://evil.example/x) <a href="http://evil.example">a</a>',
    "kind": ":rocket: $x^2$ **b** :red[r]",
    "page": "<img src=//evil.example/y>",
    "layer": "![i](//evil.example/i)",
    "head": "$x^2$ :rocket:",
    "q": "**b** <b>x</b>",
    "present": HOSTILE,
    # the "Ask why" pages' own parameters
    "heads": "<img src=//evil.example/h>,e0.0",
    "ablation": ":rocket: [l](http://evil.example/a)",
    "metric": "$x$ <b>m</b>",
    "cmp": "**c** <i>x</i>",
    "text2": HOSTILE,
    "checkpoint2": "[c2](http://evil.example/c2)",
    "snap2": "<s>9</s>",
}
PAGES = ("attention", "qkv", "model_view", "checkpoint", "output", "training")
WHY_PAGES = ("ablation", "attribution", "lens", "compare")  # in the navigation bar's "Ask why" menu

# Every URL an element points at (href, src, srcset, xlink:href, ...) that leaves the app's own host.
FOREIGN_JS = """(local) => {
  const bad = [];
  const names = ['href', 'src', 'srcset', 'action', 'formaction', 'poster', 'data', 'background', 'xlink:href'];
  for (const el of document.querySelectorAll('*')) {
    for (const name of names) {
      const v = name === 'xlink:href' ? el.getAttributeNS('http://www.w3.org/1999/xlink', 'href') : el.getAttribute(name);
      if (!v) continue;
      const parts = name === 'srcset' ? v.split(',').map(s => s.trim().split(/\\s+/)[0]) : [v];
      for (const part of parts) {
        let u;
        try { u = new URL(part, document.baseURI); } catch (e) { continue; }
        const remote = ['http:', 'https:', 'ws:', 'wss:', 'ftp:'].includes(u.protocol) && !local.includes(u.hostname);
        if (remote || u.protocol === 'javascript:') bad.push(`<${el.tagName.toLowerCase()} ${name}="${v}">`);
      }
    }
  }
  return bad;
}"""


def foreign_elements(page) -> list[str]:
    return page.evaluate(FOREIGN_JS, sorted(LOCAL_HOSTS))


def assert_nothing_rendered(page, where: str) -> None:
    """No element points elsewhere, no emoji made from a shortcode, no typeset maths, no exception."""
    assert foreign_elements(page) == [], where
    assert not exceptions(page), (where, exceptions(page))
    body = page.locator("body").inner_text()
    assert "🚀" not in body, where  # ":rocket:" stays ":rocket:"
    assert page.locator("[data-testid=stMain] .katex, [data-testid=stSidebar] .katex").count() == 0, where


def go(page, path: str, params: dict | None = None) -> None:
    page.goto(page.base_url + path + (f"?{urlencode(params)}" if params else ""))
    wait_idle(page)


def nav(page, title: str) -> None:
    page.get_by_role("link", name=title, exact=True).click()
    wait_idle(page)


def alerts(page) -> str:
    return "\n".join(page.locator("[data-testid=stAlert]").all_inner_texts())


def test_markup_in_every_link_parameter_stays_text(page, dialogs):
    go(page, "/attention")  # not the server's first session, which names its page in the link itself
    go(page, "/attention", LINK)
    wait_plot(page, "attn_heatmap")
    wait_idle(page)
    shown = alerts(page)
    # Each value is quoted as typed (cut to what the warning quotes), inside the app's own sentence.
    assert f"Unknown checkpoint {LINK['checkpoint'][:40]}…" in shown, shown
    assert f"Unknown attention kind {LINK['kind']}" in shown, shown
    assert f"Unknown page {LINK['page']}" in shown, shown
    assert f"{LINK['layer'][:20]}…" in shown and LINK["head"] in shown and LINK["q"] in shown, shown
    typed = page.locator(".st-key-w_text textarea").input_value()
    assert typed and HOSTILE.startswith(typed)  # as typed (cut to what the model reads)
    assert_nothing_rendered(page, "attention")
    page.screenshot(path=str(ARTIFACTS / "hostile-link.png"), full_page=True)
    titles = {
        "qkv": "Q, K, V",
        "model_view": "Model view",
        "checkpoint": "Checkpoint",
        "output": "Output",
        "training": "Training",
    }
    for name in PAGES[1:]:
        nav(page, titles[name])
        assert_nothing_rendered(page, name)
        page.screenshot(path=str(ARTIFACTS / f"hostile-link-{name}.png"), full_page=True)
    assert dialogs == []


def test_no_page_asks_another_host_for_anything(browser, app_url):
    """Every request the pages make goes to the app itself: the favicon, fonts, icons, scripts, figures."""
    context = browser.new_context(viewport=VIEWPORT)
    requests, refused = [], []

    def guard(route) -> None:
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("http:", "https:", "ws:", "wss:")) and host not in LOCAL_HOSTS:
            refused.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", guard)
    context.on("request", lambda r: requests.append(r.url))
    try:
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        pg.base_url = app_url  # type: ignore[attr-defined]
        for name in PAGES + WHY_PAGES:
            go(pg, f"/{name}", LINK)
            pg.wait_for_timeout(500)  # late requests: the favicon, lazily loaded fonts
            assert refused == [], (name, refused)
            assert foreign_elements(pg) == [], name  # e.g. a favicon link Chromium leaves unfetched
            assert_nothing_rendered(pg, name)
        icon = pg.evaluate("() => [...document.querySelectorAll('link[rel~=icon]')].map(l => l.href)")
        assert icon and all(h.startswith("data:") or urlparse(h).hostname in LOCAL_HOSTS for h in icon), icon
        foreign = [u for u in requests if urlparse(u).scheme in ("http", "https") and urlparse(u).hostname not in LOCAL_HOSTS]
        assert foreign == [], foreign
    finally:
        context.close()


def hostile_classifier(path):
    """A small random-weight classifier whose class names and training facts are markup."""
    texts = [s.text for s in generate_corpus(200, 0)]
    tok = train_tokenizer(texts, "encoder", vocab_size=200, min_frequency=1)
    names = ("<img src=http://evil.example/c>", ":rocket: $x$ [l](http://evil.example/l)")
    cfg = ModelConfig(
        kind="encoder",
        vocab_size=tok.vocab_size,
        n_layers=2,
        n_heads=2,
        d_model=16,
        d_ff=32,
        max_len=48,
        n_classes=2,
        class_names=names,
    )
    training = {"task": "<img src=http://evil.example/z>", "note": "[n](http://evil.example/n) :rocket: $y$ **b**"}
    return save_checkpoint(path, build_model(cfg, seed=3), tok, training), names, training


def test_uploaded_file_name_and_metadata_stay_text(page, tmp_path, dialogs):
    name = "[x](https:evil.example) <img src=https:evil.example> :rocket: $x^2$ **b**.safetensors"
    path, class_names, training = hostile_classifier(tmp_path / name)
    go(page, "/checkpoint")
    page.locator(".st-key-w_checkpoint input").click()
    page.get_by_role("option", name="Upload…", exact=True).click()
    page.locator(".st-key-upload [data-testid=stFileUploaderDropzoneInput]").set_input_files(str(path))
    page.locator(".st-key-ck_W_Q .js-plotly-plot").wait_for()
    wait_idle(page)
    assert_nothing_rendered(page, "checkpoint")
    body = page.locator("body").inner_text()
    assert f"Uploaded: {name}" in body
    cells = page.evaluate("() => [...document.querySelectorAll('[data-testid=stDataFrame] td')].map(c => c.innerText.trim())")
    assert training["task"] in cells and training["note"] in cells, cells
    assert ", ".join(class_names) in cells, cells
    page.screenshot(path=str(ARTIFACTS / "hostile-upload-checkpoint.png"), full_page=True)

    nav(page, "Output")
    wait_plot(page, "out_classes")
    wait_idle(page)
    assert_nothing_rendered(page, "output")
    ticks = page.locator(".st-key-out_classes .ytick text").all_text_contents()
    assert ticks == list(class_names), ticks  # the names as characters, not as an image or a link
    page.screenshot(path=str(ARTIFACTS / "hostile-upload-output.png"), full_page=True)

    # A file that does not load: the messages quote its name, as typed.
    bad = tmp_path / "bad" / name
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint at all")
    remove_uploads(page)  # the uploader takes several files: this one replaces the good one
    page.locator(".st-key-upload [data-testid=stFileUploaderDropzoneInput]").set_input_files(str(bad))
    page.locator("[data-testid=stSidebar] [data-testid=stAlertContentError]").wait_for()
    wait_idle(page)
    assert_nothing_rendered(page, "upload error")
    assert "Could not load the uploaded file" in alerts(page)
    page.screenshot(path=str(ARTIFACTS / "hostile-upload-error.png"), full_page=True)
    assert dialogs == []
