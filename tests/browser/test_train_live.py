"""Train in the browser: a short job started from the Training page, watched live, then opened and downloaded.

Its own `streamlit run app.py` (a fresh server: no job has run on it), two browser sessions: the one
that starts the job and another that only watches.
"""

from __future__ import annotations

import re

import pytest

from tests.browser import VIEWPORT, exceptions, figure, serve, wait_idle, wait_plot
from tests.browser.conftest import ARTIFACTS
from transformer.checkpoints.format import load_checkpoint

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STEPS = 600  # long enough to be watched growing: 80 steps were over before the first look on a fast machine
LINK = f"/training?checkpoint=translator&task=reverse&steps={STEPS}&layers=1&heads=2&d_model=16"


def progress_step(page) -> int:
    text = page.locator("[data-testid=stProgress]").inner_text()
    found = re.search(r"step (\d+) of", text)
    return int(found.group(1)) if found else 0


def wait_for(page, js: str, arg=None, timeout_ms: int = 180_000) -> None:
    page.wait_for_function(js, arg=arg, timeout=timeout_ms, polling=100)


def n_points(page, key: str) -> int:
    data = figure(page, key)["data"]
    return len(data[0].get("x", [])) if data else 0


@pytest.fixture(scope="module")
def fresh_app(chromium, served):
    ARTIFACTS.mkdir(exist_ok=True)
    with serve("app.py", served.env, log=ARTIFACTS / "streamlit-train-live.log") as (url, _):
        yield url


def test_a_short_job_trains_live_is_seen_by_another_browser_then_opens_and_downloads(browser, fresh_app, tmp_path):
    teacher = browser.new_context(viewport=VIEWPORT, accept_downloads=True).new_page()
    student = browser.new_context(viewport=VIEWPORT).new_page()
    for pg in (teacher, student):
        pg.set_default_timeout(120_000)
    try:
        teacher.goto(fresh_app + LINK)
        teacher.wait_for_selector(".st-key-tj_train button")
        wait_idle(teacher)
        assert not exceptions(teacher)
        assert teacher.locator(".st-key-tj_steps input").input_value() == str(STEPS)  # the link filled the form
        teacher.locator(".st-key-tj_train button").click()

        # Progress moves, the loss curve grows, snapshots appear one by one.
        wait_plot(teacher, "tj_loss")
        wait_for(teacher, "() => /step [1-9]\\d* of/.test(document.querySelector('[data-testid=stProgress]')?.innerText || '')")
        first_step, first_points = progress_step(teacher), n_points(teacher, "tj_loss")
        student.goto(fresh_app + "/training?checkpoint=translator")
        student.wait_for_selector("text=started from another browser")
        assert student.locator(".st-key-tj_cancel").count() == 0  # only the browser that started it may cancel
        assert "steps/s" in student.locator("[data-testid=stProgress]").inner_text()
        wait_plot(teacher, "tj_strip")
        wait_for(
            teacher,
            "() => { const g = document.querySelector('.st-key-tj_strip .js-plotly-plot'); return g && g.data.length >= 2; }",
        )
        assert progress_step(teacher) > first_step or teacher.locator("text=Open it in the sidebar").count()
        teacher.wait_for_selector("text=Open it in the sidebar", timeout=240_000)
        wait_idle(teacher)
        assert n_points(teacher, "tj_loss") > first_points
        strip = figure(teacher, "tj_strip")
        assert len(strip["data"]) >= 2 and strip["layout"]["annotations"][-1]["text"] == f"step {STEPS}"
        assert figure(teacher, "tj_metric")["data"][-1]["name"] == "final exact match"

        # The other browser sees the same finished job, and the checkpoint in its picker too.
        student.wait_for_selector("text=Trained here #1", timeout=60_000)

        # Download the one-file checkpoint; it loads, and is the model the page describes.
        with teacher.expect_download() as info:
            teacher.locator(".st-key-tj_download button").click()
        path = tmp_path / info.value.suggested_filename
        info.value.save_as(path)
        assert path.name == "trained-1-reverse.safetensors"
        ckpt = load_checkpoint(path, device="cpu")
        assert (ckpt.config.n_layers, ckpt.config.n_heads, ckpt.config.d_model) == (1, 2, 16)
        assert ckpt.training["task"] == "reverse" and ckpt.training["steps"] == STEPS

        # Open it from the sidebar's checkpoint picker: the sidebar and the Checkpoint page describe it.
        teacher.locator(".st-key-w_checkpoint input").click()
        teacher.get_by_role("option", name="Trained here #1", exact=True).click()
        wait_idle(teacher)
        teacher.wait_for_selector("text=1 layers × 2 heads")
        teacher.goto(fresh_app + "/checkpoint?checkpoint=trained-1&text=a+b+c")
        teacher.wait_for_selector("text=Training facts and metrics")
        wait_idle(teacher)
        assert not exceptions(teacher)
        body = teacher.locator("[data-testid=stMain]").inner_text()
        assert "Trained here #1" in body and "Head-job scores" in body
        # The Training page replays its snapshots like a shipped checkpoint's.
        teacher.goto(fresh_app + "/training?checkpoint=trained-1&text=a+b+c")
        wait_plot(teacher, "tr_strip")
        assert len(figure(teacher, "tr_strip")["data"]) == len(strip["data"])
        assert not exceptions(teacher) and not exceptions(student)
    finally:
        for pg, name in ((teacher, "train_live_teacher"), (student, "train_live_student")):
            pg.screenshot(path=str(ARTIFACTS / f"{name}.png"))
            pg.context.close()
