#!/bin/sh
# The on-python Airflow image's entry point, as the official image's: `bash …`, `sh …`,
# `python …` and `airflow …` run as given; anything else is an Airflow subcommand
# (`scheduler`, `db migrate`, `api-server`).
case "$1" in
  bash | sh | python | python3 | airflow) exec "$@" ;;
  *) exec airflow "$@" ;;
esac
