"""Pictures of a trace: pure Plotly figure builders (no Streamlit), and the app's Streamlit layers.

`shared.py` (and `cached.py`, `jobs.py`): what is computed once and shared by every session.
`session.py` (and `ui.py`): what belongs to one browser session: its selection, sidebar, URL.
"""
