"""What a newcomer sees first: the model's most telling head, what it does in one line, autoplay's tours, and the
examples of the task a model was trained on (an upload, a model trained here), driven through the app (AppTest)."""

from __future__ import annotations

import json

import pytest
import torch
from streamlit.testing.v1 import AppTest
from test_app import APP, TIMEOUT, no_errors, start, write_tiny
from test_uploads import uploaded

from server import session
from transformer.checkpoints import catalog
from transformer.checkpoints.format import load_checkpoint
from transformer.data.tasks import example_texts
from transformer.why import head_jobs


def shown_line(at: AppTest) -> str:
    """The Attention page's "What this head does" line."""
    lines = [m.value for m in at.markdown if m.value.startswith("**What this head does**")]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("name", ["translator", "lm", "classifier"])
def test_opens_on_the_most_telling_head_and_says_what_it_does(shipped, name):
    scores = head_jobs.head_scores(load_checkpoint(shipped[name].path, device="cpu"))
    at = start({"checkpoint": name})
    no_errors(at)
    kind, layer, head = (at.session_state[k] for k in ("sel_kind", "sel_layer", "sel_head"))
    # The first job of TELLING_ORDER that some head does, and its best head (worked out here from the raw scores).
    job = next(j for j in head_jobs.TELLING_ORDER for key, t in scores.items() if key.startswith(f"{j} (") and t.max() >= 0.5)
    key = next(k for k in scores if k.startswith(f"{job} ("))
    best = scores[key].max()
    assert key == f"{job} ({kind})" and scores[key][layer, head] == best, (job, kind, layer, head)
    if name == "translator":
        assert (kind, job) == ("cross", "alignment"), "the translator's showcase: a head that aligns words"
    line = shown_line(at)
    assert f"{job} {best:.2f}: {head_jobs.JOB_MEANINGS[job]}" in line
    assert (at.query_params["kind"], at.query_params["layer"], at.query_params["head"]) == (kind, str(layer), str(head))


def test_a_switch_opens_the_new_models_telling_head_and_a_link_keeps_its_own(shipped):
    at = start({"checkpoint": "lm", "kind": "decoder self", "layer": "0", "head": "0"})
    assert (at.session_state["sel_layer"], at.session_state["sel_head"]) == (0, 0), "a link naming a head opens on it"
    at.selectbox(key="w_checkpoint").set_value("translator").run()
    no_errors(at)
    assert at.session_state["sel_kind"] == "cross" and shown_line(at).startswith("**What this head does** — alignment")
    before = shown_line(at)
    # Moving on from there: the line follows the head shown (another head, other scores).
    at.button(key="attn_next_head").click().run()
    no_errors(at)
    assert shown_line(at) != before


def test_every_head_tour_goes_through_every_kind_and_the_job_tour_only_through_jobs():
    layers = {"encoder self": 2, "decoder self": 1, "cross": 1}
    stops = session.every_head(layers, 2)
    assert len(stops) == (2 + 1 + 1) * 2 and stops[0] == ("encoder self", 0, 0) and stops[-1] == ("cross", 0, 1)
    order = tuple(layers)
    walk, at = [], stops[0]
    for _ in range(len(stops)):
        at = session.next_stop(stops, at, order)
        walk.append(at)
    assert walk == [*stops[1:], stops[0]], "one step at a time, every kind, then around again"
    # The jobs tour: from a head that is no stop, on to the next stop in the model's order.
    scores = {
        "alignment (cross)": torch.tensor([[0.2, 0.9]]),
        "previous-token (encoder self)": torch.tensor([[0.1, 0.0], [0.7, 0.3]]),
    }
    tour = head_jobs.tour(scores, order)
    assert tour == [("encoder self", 1, 0), ("cross", 0, 1)]
    assert session.next_stop(tour, ("decoder self", 0, 0), order) == ("cross", 0, 1)
    assert session.next_stop(tour, ("cross", 0, 1), order) == ("encoder self", 1, 0)
    assert head_jobs.most_telling(scores).job == "alignment"
    assert head_jobs.most_telling({"first-token (cross)": torch.tensor([[0.1]])}) is None


def test_autoplay_settings_and_a_touch_pauses_it(shipped):
    at = start({"checkpoint": "translator"})
    at.toggle(key=session.AUTOPLAY).set_value(True).run()
    no_errors(at)
    assert at.session_state[session.AUTOPLAY]
    at.button(key="attn_next_head").click().run()  # the teacher takes over
    no_errors(at)
    assert not at.session_state[session.AUTOPLAY] and not at.toggle(key=session.AUTOPLAY).value


def test_a_model_of_a_task_gets_that_tasks_examples(shipped, monkeypatch, tmp_path):
    from server import shared

    monkeypatch.setenv("ATTNVIZ_NO_HF_CACHE", "1")
    monkeypatch.delenv("ATTNVIZ_MODELS", raising=False)
    shared.load_upload.clear()
    reverse = write_tiny(tmp_path / "my-model.safetensors", "reverse").read_bytes()
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    lm_example = at.session_state["sel_text"]  # the translator's first example (the default checkpoint)
    at = uploaded(at, [("my-model.safetensors", reverse)])
    no_errors(at)
    shipped = json.loads(catalog.EXAMPLES_FILE.read_text())["reverse"]
    assert at.session_state["sel_text"] == shipped[0]["text"] != lm_example, "an untouched example becomes the task's"
    assert at.selectbox(key="example").options == [ex["label"] for ex in shipped]
    # The sidebar names the whole file (as typed) and what the model was trained to do.
    said = [c.value for c in at.sidebar.caption if "my-model.safetensors" in c.value]
    assert said and catalog.TASK_DESCRIPTIONS["reverse"] in said[0]
    # A task the examples file has none of: its own generator's texts.
    made = session.shared.examples_for("trained-3", "sort")
    assert [ex["text"] for ex in made] == example_texts("sort") and all(
        t.replace(" ", "").isdigit() for t in example_texts("sort")
    )


def test_a_checkpoint_uploaded_with_its_snapshots_replays_them_on_the_training_page(shipped, monkeypatch):
    from test_app import charts

    from server import shared
    from transformer.checkpoints import uploads

    monkeypatch.setenv("ATTNVIZ_NO_HF_CACHE", "1")
    monkeypatch.delenv("ATTNVIZ_MODELS", raising=False)
    shared.load_upload.clear()
    model = shipped["lm"].path.read_bytes()
    snaps = shipped["lm"].path.with_name("lm.snapshots.safetensors").read_bytes()
    judged = uploads.prepare([("my lm.safetensors", model), ("my lm.snapshots.safetensors", snaps)], 2**30)
    assert judged.kind == "ours" and judged.snapshots == snaps and list(judged.files.values()) == [model]

    text = "the dog runs ."
    own = start({"checkpoint": "lm", "page": "training", "text": text, "kind": "decoder self", "layer": "1", "head": "0"})
    no_errors(own)
    at = uploaded(
        start({"checkpoint": "lm", "text": text}), [("my lm.safetensors", model), ("my lm.snapshots.safetensors", snaps)]
    )
    no_errors(at)
    at.switch_page("pages/training.py").run()
    at.session_state["sel_kind"], at.session_state["sel_layer"], at.session_state["sel_head"] = "decoder self", 1, 0
    at.run()
    no_errors(at)
    strip, shipped_strip = charts(at)["tr_strip"], charts(own)["tr_strip"]
    assert len(strip["data"]) == len(shipped_strip["data"]) >= 2, "every snapshot, as beside the shipped file"
    for mine, theirs in zip(strip["data"], shipped_strip["data"], strict=True):
        assert mine["z"] is not None and (mine["z"] == theirs["z"]).all(), "the same snapshots, the same weights"


def test_a_checkpoint_from_a_models_folder_offers_its_tasks_examples(shipped, monkeypatch, tmp_path):
    """A model trained on one of our tasks and found on disk (as a model trained here is) opens on that task's texts."""
    folder = tmp_path / "models"
    folder.mkdir()
    write_tiny(folder / "my-sorter.safetensors", "reverse")
    monkeypatch.setenv("ATTNVIZ_MODELS", str(folder))
    monkeypatch.setenv("ATTNVIZ_NO_HF_CACHE", "1")
    at = start({"checkpoint": "translator"})
    name = next(n for n in at.session_state["_entries"] if "my-sorter" in n)
    at.selectbox(key="w_checkpoint").set_value(name).run()
    no_errors(at)
    reverse = json.loads(catalog.EXAMPLES_FILE.read_text())["reverse"]
    assert at.session_state["sel_text"] == reverse[0]["text"], "the translator's untouched example became the task's"
    assert at.selectbox(key="example").options == [ex["label"] for ex in reverse]
