#!/usr/bin/env bash
# The wfcore demo: a review workflow through a subprocess, an agent and a person,
# on the embedded SQLite store (.wfe/wfe.db in the current folder).
set -euo pipefail
APP=examples.demo_app:engine
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Submit a task to the 'review' workflow"
ID=$(wfe submit review --app "$APP" \
  --data '{"title": "Release notes", "text": "wfcore routes tasks through phases run by people, agents and programs"}')
echo "task $ID"

say "Run a worker until nothing is runnable: extract (subprocess) and draft (agent) run, approve waits"
wfe worker "$APP" --until-idle
wfe tasks --status waiting_human --limit 5

say "A person answers (the command you would run):"
echo "wfe resume $ID --output '{\"approved\": true, \"comment\": \"Ship it\"}'"
wfe resume "$ID" --output '{"approved": true, "comment": "Ship it"}'

say "The worker finishes the workflow"
wfe worker "$APP" --until-idle --quiet
wfe show "$ID"
