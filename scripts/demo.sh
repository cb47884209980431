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
"$KH" session destroy "$sid" --wait 60 >/dev/null
"$KH" session show "$sid"
echo
echo "kernelhub keeps running: use the exports above; stop it with: make down (or kh down)"
