#!/usr/bin/env bash
# Set-up for the main job, then the quickstart: Python's venv support, .venv with torch 2.13.0 and
# optiseg, then the quickstart search to a Pareto front and its HTML report (reports/quickstart.html).
# Idempotent: run it again and it reuses what is there (the search resumes, or is already done).
. "$(dirname "$0")/_setup.sh"
cd "$REPO"

command -v dpkg-query >/dev/null && apt_packages python3 python3-venv
python_env ""

say "optiseg search examples/quickstart.yaml"
optiseg search examples/quickstart.yaml
say "optiseg report runs/quickstart"
optiseg report runs/quickstart
say "done: optiseg front runs/quickstart shows the front; . .venv/bin/activate to use optiseg yourself"
