#!/usr/bin/env bash
# Installs what Python and JavaScript plugins are built with, once: a virtual environment at
# target/guest-tools/python with the Python SDK (which brings componentize-py) and pytest, and
# the JavaScript SDK's packages (componentize-js, esbuild) in sdk/js/node_modules, exactly as
# sdk/js/package-lock.json pins them. Later runs only check that both are in place.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/guest-tools/python
if [ ! -x "$venv/bin/componentize-py" ] || [ sdk/python/pyproject.toml -nt "$venv/bin/componentize-py" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check ./sdk/python pytest==9.2.0
  touch "$venv/bin/componentize-py"
fi
# The SDK is installed (not linked) so that builds see it as a plugin's author does; sources
# changed since are installed again, which is quick once componentize-py is there.
if [ -n "$(find sdk/python -name '*.py' -newer "$venv/bin/componentize-py" -print -quit)" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall ./sdk/python
  touch "$venv/bin/componentize-py"
fi

if [ ! -d sdk/js/node_modules ] || [ sdk/js/package-lock.json -nt sdk/js/node_modules ]; then
  (cd sdk/js && npm ci --no-audit --no-fund --loglevel=error)
  touch sdk/js/node_modules
fi
