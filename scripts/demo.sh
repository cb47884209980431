#!/usr/bin/env bash
# `make demo`: bring the embedded stack up, run one session through its whole life, show it.
# The stack keeps running afterwards (the printed exports connect to it); `make down` stops it.
set -euo pipefail
KH=${KH:-.venv/bin/kh}
"$KH" up "$@"
echo
echo "== a session, from enqueue to termination =="
created=$("$KH" session create --name demo --wait 60)
sid=${created%%$'\n'*}
echo "$created"
echo "== code in it: kh session exec $sid -c 'print(6*7)' =="
"$KH" session exec "$sid" -c 'import os; print(6*7, os.environ["BACKENDAI_SESSION_NAME"])'
"$KH" session destroy "$sid" --wait 60 >/dev/null
"$KH" session show "$sid"
echo
echo "== its history, from the log: kh why $sid; kh events verify =="
"$KH" why "$sid"
"$KH" events verify
BAI=${BAI:-$PWD/.venv-bai/bin/backend.ai}
if [ -x "$BAI" ]; then
  echo
  echo "== Backend.AI's own client through the gateway: backend.ai run --rm python -c 'print(6*7)' =="
  config=$("$KH" up 2>/dev/null | grep '^export BACKEND_')
  (eval "$config"; cd "$(mktemp -d)" && "$BAI" run --rm python -c 'print(6*7)')
fi
echo
echo "kernelhub keeps running: use the exports above; stop it with: make down (or kh down)"
