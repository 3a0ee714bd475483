"""The app's Streamlit layer, between the pages and the pure code below them (`transformer/`, `viz/`).

Shared by every session (made once, read-only): `shared.py` (models, traces, pooled maps, snapshots,
uploads, model slots), `shared_figures.py` (figures), `shared_analyses.py` (the Ask why computations),
`head_jobs.py` (head-job scores), `training_jobs.py` (this server's training job runner).
One browser session's own: `session.py` (selection, sidebar, URL, messages), `urlstate.py` (a link
parsed into validated plain values), `widgets.py` (widgets the pages share).
Helpers: `lru.py` (a byte-bounded cache), `literal.py` (user text shown literally in messages).
"""
