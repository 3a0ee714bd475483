"""Attention, layer by layer and head by head: the Streamlit entry point (`make run` / `streamlit run app.py`).

This file sets up the page, the sidebar and the URL state, then runs one of the pages in
`pages/`. The model runs once per (checkpoint, text, target); pages only draw from the cached trace.
"""

from __future__ import annotations

import streamlit as st

from server import class_screens, classroom, head_jobs, model_sources, session, shared, streamlit_fixes, training_jobs, widgets
from transformer.checkpoints import catalog

streamlit_fixes.install()  # once per process: a finished run's last messages reach the browser (see the module)
session.server_rerun_done()

st.set_page_config(page_title="Attention explorer", page_icon=str(catalog.ASSETS / "icon.svg"), layout="wide")

PAGES = {
    "attention": st.Page("pages/attention.py", title="Attention", icon=":material/grid_on:", url_path="attention"),
    "qkv": st.Page("pages/qkv.py", title="Q, K, V", icon=":material/calculate:", url_path="qkv"),
    "model_view": st.Page("pages/model_view.py", title="Model view", icon=":material/apps:", url_path="model_view"),
    "checkpoint": st.Page("pages/checkpoint.py", title="Checkpoint", icon=":material/memory:", url_path="checkpoint"),
    "output": st.Page("pages/output.py", title="Output", icon=":material/output:", url_path="output"),
    "training": st.Page("pages/training.py", title="Training", icon=":material/timeline:", url_path="training"),
}
# "Ask why": what the heads do, not only where they look (a menu of its own in the navigation bar).
WHY = {
    "ablation": st.Page("pages/ablation.py", title="Ablation", icon=":material/block:", url_path="ablation"),
    "attribution": st.Page(
        "pages/attribution.py", title="Rollout & saliency", icon=":material/account_tree:", url_path="attribution"
    ),
    "lens": st.Page("pages/lens.py", title="Logit lens", icon=":material/visibility:", url_path="lens"),
    "compare": st.Page("pages/compare.py", title="Compare", icon=":material/compare:", url_path="compare"),
}
PAGES.update(WHY)


def _home() -> None:
    """The bare URL "/" opens the Attention page, so that every page, Attention included, has its own path."""
    st.switch_page(PAGES["attention"])


HOME = st.Page(_home, title="Home", url_path="home", default=True, visibility="hidden")

# The shipped models, then the server owner's (models folders, the Hugging Face cache), then those trained here.
entries = {**catalog.available(), **model_sources.entries(), **training_jobs.checkpoint_entries()}
session.init_session(entries, tuple(PAGES))
st.session_state.pop(classroom.DOWN, None)
with classroom.unless_unavailable():  # a shared class store that cannot be reached: a message, and the app goes on
    classroom.read_link()  # ?follow=CODE (a student) or ?teach=CODE&key=… (its teacher, after a reload)
    classroom.follow(entries, tuple(PAGES))  # a student following a class takes the teacher's latest view
presenting = bool(st.session_state.get("sel_presentation"))
# Presentation mode folds the sidebar away (its arrow, top left, opens it again), and unfolds it when it ends.
st.set_page_config(initial_sidebar_state="collapsed" if presenting else "auto")
training_jobs.read_link()  # the Training page's ?task=…: kept before sync_url rewrites the link
LOOK = [p for name, p in PAGES.items() if name not in WHY]
page = st.navigation({"": [HOME, *LOOK], "Ask why": list(WHY.values())}, position="top")

# A link's ?page=..., a click in the model view, the class's page. Kept until that page runs: a rerun the browser asked
# for meanwhile (a fragment's timer) can take the switch's place, with the page the browser still shows.
goto = st.session_state.get("_goto")
if goto in PAGES and PAGES[goto].url_path != page.url_path:
    st.switch_page(PAGES[goto])
st.session_state.pop("_goto", None)

# Streamlit pads the page 8rem below a top navigation bar that is 60 px high: keep just a little air.
CSS = "[data-testid='stMainBlockContainer'] {padding-top: 4.5rem;}"
if presenting:
    # Larger text everywhere for a projector (figures enlarge their own fonts), less padding around the page, and
    # the main figure as tall as the screen leaves it (widgets.PRESENTED): whole on a 1280×720 or 1920×1080 screen.
    CSS = (
        "[data-testid='stMainBlockContainer'] {padding: 4.2rem 2rem 1rem 2rem;}"
        "html, .stMarkdown, .stText, [data-testid='stWidgetLabel'] p, [role='radiogroup'] p "
        "{font-size: 1.15rem !important;}"
        f"{widgets.PRESENTED_CSS}"
    )
st.html(f"<style>{CSS}</style>")

if page.url_path == HOME.url_path or page.url_path == "":
    st.switch_page(PAGES["attention"])
session.page_drawn(page.url_path)  # what a fragment's rerun is checked against (`session.fragment`)

shared.use_one_torch_thread()
ctx = head_jobs.open_telling(session.sidebar(entries))  # no head chosen yet: the model's most telling one
shared.freeze_startup_objects()  # once per process, after the first model is loaded
session.publish(ctx, entries)
with st.sidebar, classroom.unless_unavailable():  # a class to teach or join, and lessons: below the model's controls
    class_screens.sidebar(ctx)
session.sync_url(ctx, page.url_path)
session.show_messages(ctx)
class_screens.poll()  # a student following a class: is there a new view?
with classroom.unless_unavailable():
    class_screens.banner(ctx)
page.run()
