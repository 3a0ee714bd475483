"""AppTests of the Training page's "Train a model now": bad input from the form and from a link, and a tiny job end to end.

Bad input never starts a job and never reaches Markdown unquoted (a link's value shows literally).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_app import charts, write_tiny

from server import job_board, training_jobs
from tests.browser import free_port
from transformer.checkpoints import catalog
from transformer.checkpoints.format import load_checkpoint
from transformer.checkpoints.snapshots import save_snapshots
from transformer.train import jobs

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 120


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """Tiny checkpoints in the catalogue, on the CPU, without the MiniLM model."""
    write_tiny(tmp_path / "reverse.safetensors", "reverse")
    monkeypatch.setenv("ATTNVIZ_DEVICE", "cpu")
    monkeypatch.setenv(catalog.ASSETS_ENV, str(tmp_path))
    monkeypatch.setenv(catalog.NO_MINILM_ENV, "1")
    return tmp_path


@pytest.fixture
def env(tiny):
    """`tiny`, and a fresh job runner (closed afterwards, so no other test sees its jobs)."""
    training_jobs.runner.clear()
    yield tiny
    training_jobs.runner().close()
    training_jobs.runner.clear()


def start(params: dict, page: str = "training") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({"checkpoint": "reverse", "page": page, **params})
    return at.run()


def errors(at: AppTest) -> list[str]:
    assert not at.exception, [e.value for e in at.exception]
    return [e.value for e in at.error]


def test_the_form_opens_on_the_reverse_preset(env):
    at = start({})
    assert errors(at) == []
    preset = jobs.PRESETS["reverse in under a minute"]
    assert at.session_state["tj_task"] == "reverse"
    assert {k: at.session_state[f"tj_{k}"] for k in ("n_layers", "n_heads", "d_model", "steps")} == {
        k: v for k, v in preset.items() if k != "task"
    }
    assert any("1 CPU thread" in c.value or "CPU thread" in c.value for c in at.caption)
    assert training_jobs.runner().jobs() == []


@pytest.mark.parametrize(
    "params, message",
    [
        (
            {"task": ":red[nope] $x$"},
            "Unknown task ` :red[nope] $x$ ` in the link: choose one of reverse, copy, sort, lm, translation.",
        ),
        ({"steps": "0"}, "The link's steps was not used: steps is 0: this server trains with steps from 1 to 5,000."),
        (
            {"steps": "99999999999"},
            "The link's steps was not used: steps is 99,999,999,999: this server trains with steps from 1 to 5,000.",
        ),
        ({"steps": "ten"}, "The link's steps was not used: steps must be a whole number, not ` ten `"),
        ({"layers": "64"}, "The link's n_layers was not used: n_layers is 64: this server trains with n_layers from 1 to 4."),
        (
            {"d_model": "100000"},
            "The link's d_model was not used: d_model is 100,000: this server trains with d_model from 8 to 256.",
        ),
        ({"preset": "`rm -rf`"}, "Unknown preset `` `rm -rf` `` in the link: choose one of " + ", ".join(jobs.PRESETS) + "."),
    ],
)
def test_bad_links_say_what_was_not_used(env, params, message):
    at = start(params)
    assert errors(at) == [message]
    assert at.session_state["tj_task"] == "reverse" and 1 <= at.session_state["tj_steps"] <= 5000
    assert not at.warning  # the form holds valid values (the preset's where the link's were not used)


def test_a_good_link_fills_the_form(env):
    at = start({"task": "sort", "steps": "30", "layers": "1", "heads": "2", "d_model": "32"})
    assert errors(at) == []
    assert [at.session_state[k] for k in ("tj_task", "tj_steps", "tj_n_layers", "tj_n_heads", "tj_d_model")] == [
        "sort",
        30,
        1,
        2,
        32,
    ]
    assert at.session_state["tj_preset"] == "your own settings"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("steps", 0, "steps is 0: this server trains with steps from 1 to 5,000."),
        ("steps", -5, "steps is -5: this server trains with steps from 1 to 5,000."),
        ("steps", 10**9, "steps is 1,000,000,000: this server trains with steps from 1 to 5,000."),
        ("n_heads", 64, "n_heads is 64: this server trains with n_heads from 1 to 8."),
        ("d_model", 62, "d_model 62 does not split evenly over 4 heads: choose a d_model that is a multiple of n_heads."),
    ],
)
def test_bad_form_values_are_refused_before_starting(env, field, value, message):
    at = start({})
    at.number_input(key=f"tj_{field}").set_value(value).run()
    assert message in [w.value for w in at.warning]
    at.button(key="tj_train").click().run()
    assert errors(at) == [message]
    assert training_jobs.runner().jobs() == []


def test_a_job_too_long_for_the_server_is_refused_with_the_estimate(env):
    at = start({"task": "lm"})
    for key, value in (("n_layers", 4), ("n_heads", 8), ("d_model", 256), ("steps", 5000)):
        at.number_input(key=f"tj_{key}").set_value(value)
    at.run()
    at.button(key="tj_train").click().run()
    [error] = errors(at)
    assert error.startswith("lm, 4 layers × 8 heads, d_model 256, 5000 steps would take about ") and "at most 10 min" in error
    assert training_jobs.runner().jobs() == []


def test_a_second_job_queues_and_a_third_is_refused_saying_who_is_ahead(env):
    at = start({"task": "reverse", "steps": "400", "layers": "1", "heads": "2", "d_model": "16"})
    at.button(key="tj_train").click().run()
    at.button(key="tj_train").click().run()
    assert [j.state for j in training_jobs.runner().jobs()][1] == "queued"
    other = start({"task": "reverse", "steps": "400", "layers": "1", "heads": "2", "d_model": "16"})
    other.button(key="tj_train").click().run()
    [error] = errors(other)
    assert error.startswith(
        "This server trains one model at a time and 1 more may wait; ahead now: #1 (reverse, 1 layers × 2 heads"
    )
    assert "asked for from another browser" in error and len(training_jobs.runner().jobs()) == 2
    # The owner sees its job and may cancel it; the other browser sees it too, without the button.
    at.run()
    assert any(md.value.startswith("**Job #1**") and "started in this browser" in md.value for md in at.markdown)
    assert any(b.key == "tj_cancel" for b in at.button)
    other.run()
    assert any("started from another browser" in md.value for md in other.markdown)
    assert not any(b.key == "tj_cancel" for b in other.button)
    at.button(key="tj_cancel").click().run()
    runner = training_jobs.runner()
    assert runner.wait("job-0001", 60).state == "cancelled"
    runner.cancel("job-0002")
    assert runner.wait("job-0002", 60).state == "cancelled"


def test_a_reloaded_tab_can_still_cancel_its_job_and_a_forged_token_cannot(env):
    at = start({"task": "reverse", "steps": "400", "layers": "1", "heads": "2", "d_model": "16"})
    assert "owner" not in at.query_params  # nothing started yet: nothing to keep
    at.button(key="tj_train").click().run()
    token = at.query_params["owner"]
    assert len(token) == 32
    # A reload is a new session with the same link: it is still this browser's job.
    reloaded = start({"owner": token})
    assert any("started in this browser" in md.value for md in reloaded.markdown)
    assert any(b.key == "tj_cancel" for b in reloaded.button)
    for forged in ("0" * 32, token[:-1], "<b>x</b>"):
        other = start({"owner": forged})
        assert not any(b.key == "tj_cancel" for b in other.button), forged
    reloaded.button(key="tj_cancel").click().run()
    assert training_jobs.runner().wait("job-0001", 60).state == "cancelled"


def test_progress_figures_hold_the_jobs_numbers():
    losses = [(2, 3.5), (4, 3.1), (6, 2.0)]
    evals = [{"step": 5, "eval_loss": 2.9, "eval_accuracy": 0.2}, {"step": 10, "eval_loss": 1.0, "eval_accuracy": 0.7}]
    fig = training_jobs.loss_figure(losses, evals, steps=10)
    assert list(fig.data[0].x) == [2, 4, 6] and list(fig.data[0].y) == [3.5, 3.1, 2.0]
    assert list(fig.data[1].x) == [5, 10] and list(fig.data[1].y) == [2.9, 1.0]
    assert list(fig.layout.xaxis.range) == [0, 10]  # the whole run's width from the start: the curve grows into it
    fig = training_jobs.metric_figure(evals, steps=10, final={"exact_match": 0.995, "n": 500})
    assert list(fig.data[0].y) == [0.2, 0.7]
    assert fig.data[1].name == "final exact match" and list(fig.data[1].x) == [10] and list(fig.data[1].y) == [0.995]
    assert len(training_jobs.metric_figure(evals, steps=10).data) == 1


def test_the_ablation_pages_heads_in_a_link_is_not_a_training_field(env):
    """?heads=d1.3 (the Ablation page's knocked-out heads) is not the Training page's n_heads: no message about it."""
    at = start({"heads": "d1.3"})
    assert errors(at) == []


def test_a_jobs_folder_that_cannot_be_made_stops_training_only(monkeypatch, tiny):
    """A deployment whose jobs folder the app cannot write (compose's volume once was root's): the Training page says
    why and still replays the checkpoint's snapshots (they need no jobs folder), every other page draws as before,
    and the folder is tried again at the next run, not cached as broken."""
    ckpt = load_checkpoint(tiny / "reverse.safetensors", device="cpu")
    save_snapshots(tiny / "reverse.snapshots.safetensors", [(0, ckpt.model.state_dict())], ckpt.config, ckpt.tokenizer)
    blocked = tiny / "not a folder"
    blocked.write_text("a file where the jobs folder's parent should be")
    monkeypatch.setattr(job_board.LocalBoard, "folder", blocked)  # where the runner's folder goes
    training_jobs.runner.clear()
    try:
        at = start({})
        assert not at.exception, [e.value for e in at.exception]
        (error,) = [e.value for e in at.error]
        shown = f"cannot be made in ` {blocked} ` (` Not a directory `). The server's owner can give the app's user"
        assert error.startswith("Training is unavailable on this server: its jobs folder ") and shown in error, error
        assert "tj_train" not in [b.key for b in at.button]
        drawn = charts(at)  # the replay's numbers are checked in test_app.py; here: it is there, one panel per snapshot
        assert len(drawn["tr_strip"]["data"]) == 1 and "tr_heatmap" in drawn, sorted(drawn)
        other = start({}, page="attention")
        assert not other.exception and not other.error, [e.value for e in [*other.exception, *other.error]]
        assert other.get("plotly_chart"), "the Attention page draws"

        blocked.unlink()  # the owner fixes the folder: the next run trains again
        blocked.mkdir()
        at.run()
        assert not at.exception and not at.error and "tj_train" in [b.key for b in at.button]
    finally:
        with contextlib.suppress(training_jobs.Unavailable):
            training_jobs.runner().close()
        training_jobs.runner.clear()


def test_a_shared_jobs_folder_that_cannot_be_made_stops_training_only(monkeypatch, tiny):
    """Behind `make school` or compose ($ATTNVIZ_REDIS_URL and $ATTNVIZ_JOBS_DIR), a jobs folder that cannot be made:
    the Attention page draws (no store answers here either: classes are unavailable), and the Training page says why."""
    from server.classroom import REDIS_ENV

    blocked = tiny / "not a folder"
    blocked.write_text("a file where the jobs folder should be")
    monkeypatch.setenv(REDIS_ENV, f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    monkeypatch.setenv(job_board.JOBS_DIR_ENV, str(blocked / "jobs"))
    training_jobs.board.clear()
    training_jobs.runner.clear()
    try:
        other = start({}, page="attention")
        assert not other.exception, [e.value for e in other.exception]
        assert other.get("plotly_chart"), "the Attention page draws"
        at = start({})
        assert not at.exception, [e.value for e in at.exception]
        (error,) = [e.value for e in at.error]
        assert f"its jobs folder cannot be made in ` {blocked} ` (` Not a directory `)" in error, error
    finally:
        training_jobs.board.clear()
        training_jobs.runner.clear()
