# Set-up and entry points. Both targets create .venv if needed and install cico into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install --upgrade -q pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test,onnx]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cico demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build dist *.egg-info
