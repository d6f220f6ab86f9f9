# Set-up and entry points. Both targets create .venv if needed and install cico into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The lowest versions pyproject.toml allows (constraints-min.txt), in their own venv, built by the lowest
# setuptools without build isolation.
VENV_MIN := .venv-min
PY_MIN := $(VENV_MIN)/bin/python
STAMP_MIN := $(VENV_MIN)/.installed
# Their subset: all but the slow end-to-end, training and distributed runs; one golden network case (Swin).
# The dev extra's optional packages (supervision, TrackEval, ONNX) are not in the lowest-versions set.
MIN_TESTS := -m "not slow" \
	-k "not (kill_and_resume or decrease_the_loss or test_distributed or (test_golden_network and r50))" \
	--ignore=tests/test_interop.py --ignore=tests/test_tracking_trackeval.py --ignore=tests/test_onnx.py

.PHONY: demo test test-min install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install --upgrade -q pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cico demo

test: $(STAMP)
	$(PY) -m pytest -q

$(PY_MIN):
	$(PYTHON) -m venv $(VENV_MIN)

$(STAMP_MIN): $(PY_MIN) pyproject.toml constraints-min.txt
	$(PY_MIN) -m pip install --upgrade -q pip
	$(PY_MIN) -m pip install -q -c constraints-min.txt setuptools wheel
	$(PY_MIN) -m pip install -q -c constraints-min.txt --no-build-isolation -e ".[test]"
	$(PY_MIN) -m pip check
	touch $(STAMP_MIN)

test-min: $(STAMP_MIN)
	$(PY_MIN) -m pip freeze | grep -i -E "^(torch|timm|numpy|pycocotools|opencv|av|pillow)[-a-z]*=="
	$(PY_MIN) -m pytest -q $(MIN_TESTS)

clean:
	rm -rf $(VENV) $(VENV_MIN) build dist *.egg-info
