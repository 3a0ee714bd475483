"""The "Ask why" functions: pure functions over a model and its traces, no Streamlit.

- `head_jobs.py`: one score per layer and head for each job a head can do (previous token, induction, ...)
- `ablation.py`: knock heads out and measure what changes in the output
- `rollout.py`: attention rollout and attention flow
- `lens.py`: the logit lens
- `saliency.py`: gradient saliency and integrated gradients
"""
