"""Pictures of a trace: pure Plotly figure builders (no Streamlit) plus the app's Streamlit helpers in `viz.state`/`viz.ui`."""
