"""`readmit` command line: thin wrappers that print progress and a closing summary."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from readmit.errors import ReadmitError, first_line
from readmit.settings import DEFAULT_API_URL, Settings, settings_problems
from readmit.stack.s3 import BUCKET

if TYPE_CHECKING:
    from readmit.summaries import Summary

app = typer.Typer(
    help="readmit: 30-day readmission prediction for diabetic inpatients.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def _debug() -> bool:
    """READMIT_DEBUG, read when an error needs it (a bad setting means no)."""
    try:
        return Settings().debug
    except ValidationError:
        return False


def fails_cleanly(command: F) -> F:
    """Turn a ReadmitError or a bad setting into one line on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ReadmitError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(code=1) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if isinstance(exc, ValidationError) and exc.title == Settings.__name__:
                for line in settings_problems(exc):
                    err_console.print(f"[bold red]error:[/] {line}", highlight=False)
                raise typer.Exit(code=1) from None
            if _debug():
                raise
            err_console.print(
                f"[bold red]error:[/] unexpected {type(exc).__name__}: {first_line(exc)} "
                "(set READMIT_DEBUG=1 for the traceback)",
                highlight=False,
            )
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def safe_url(url: str) -> str:
    """`url` with its password hidden: every URL the commands print goes through here."""
    from readmit.storage.db import safe_url as hide_password

    return hide_password(url)


def _say(message: str) -> None:
    console.print(f"  {message}", highlight=False)


def _done(summary: Summary) -> None:
    console.print(f"[green]{summary.step} done[/]: {summary.line}", highlight=False)


def audit_log(settings: Settings) -> None:
    """Pipeline steps also write JSON lines to <data dir>/logs/pipeline.jsonl."""
    from readmit.logs import configure_file_logging

    configure_file_logging(settings.data_dir / "logs" / "pipeline.jsonl", settings.log_level)


def run_ingest(settings: Settings, all_batches: bool) -> None:
    from readmit.pipeline.ingest import ingest as ingest_step
    from readmit.summaries import ingest_summary

    audit_log(settings)
    clock = time.perf_counter()
    raw_db = safe_url(settings.resolved_raw_db_url)
    console.print(f"[bold]ingest[/] {safe_url(settings.dataset_uri)} -> {raw_db}")
    result = ingest_step(settings, all_batches=all_batches, report=_say)
    _done(ingest_summary(settings, result, time.perf_counter() - clock))


def run_clean(settings: Settings) -> None:
    from readmit.pipeline.clean import build_clean
    from readmit.summaries import clean_summary

    audit_log(settings)
    raw_db, clean_db = (
        safe_url(settings.resolved_raw_db_url),
        safe_url(settings.resolved_clean_db_url),
    )
    console.print(f"[bold]clean[/] {raw_db} -> {clean_db}")
    _done(clean_summary(settings, build_clean(settings, report=_say)))


def run_materialise(settings: Settings) -> None:
    from readmit.feature_store.repo import materialize
    from readmit.summaries import materialise_summary

    audit_log(settings)
    console.print(
        f"[bold]materialise[/] patient history of {safe_url(settings.resolved_clean_db_url)}"
    )
    _done(materialise_summary(settings, materialize(settings, report=_say)))


@app.command()
@fails_cleanly
def ingest(
    all_batches: Annotated[bool, typer.Option("--all", help="Load every pending batch.")] = False,
) -> None:
    """Load the next pending batch of the data set into raw-db (or all with --all)."""
    run_ingest(Settings(), all_batches)


@app.command()
@fails_cleanly
def clean() -> None:
    """Clean raw-db into clean-db and fit the transform on clean_train."""
    run_clean(Settings())


@app.command()
@fails_cleanly
def materialise() -> None:
    """Load the latest clean build's patient history into the feature store (Feast)."""
    run_materialise(Settings())


def run_train(settings: Settings) -> None:
    from readmit.pipeline.train import train as train_step
    from readmit.summaries import train_summary

    audit_log(settings)
    clean_db, tracking = (
        safe_url(settings.resolved_clean_db_url),
        safe_url(settings.resolved_tracking_uri),
    )
    console.print(f"[bold]train[/] {clean_db} -> {tracking}")
    _done(train_summary(settings, train_step(settings, report=_say)))


@app.command()
@fails_cleanly
def train() -> None:
    """Train the candidates on the latest clean build, register the best, promote if better."""
    run_train(Settings())


@app.command()
@fails_cleanly
def promote(
    version: Annotated[str, typer.Option("--version", help="Version to put in production.")],
    override_audit: Annotated[
        str | None,
        typer.Option(
            "--override-audit",
            metavar="REASON",
            help="Promote a version that failed its subgroup audit; the reason is recorded.",
        ),
    ] = None,
) -> None:
    """Move @production to a given version (the previous one is archived)."""
    from readmit.registry import promote_by_hand
    from readmit.repair import repair

    settings = Settings()
    for line in repair(settings):
        _say(f"repaired: {line}")
    previous = promote_by_hand(settings, version, override_audit)
    archived = f"; v{previous} archived" if previous else ""
    console.print(f"[green]{settings.model_name} v{version} is @production[/]{archived}")


@app.command("model-card")
@fails_cleanly
def model_card(
    version: Annotated[str, typer.Option("--version", help="Registered version.")],
) -> None:
    """(Re)generate a version's model card from its training run and log it to that run."""
    from readmit.model_card import CARD_HTML, CARD_MARKDOWN, write_model_card

    settings = Settings()
    card = write_model_card(settings, version)
    console.print(
        f"[green]model card of {settings.model_name} v{version}[/]: {CARD_MARKDOWN} and "
        f"{CARD_HTML} of run {card.run_id}",
        highlight=False,
    )


@app.command()
@fails_cleanly
def challenge(
    version: Annotated[
        str | None, typer.Option("--version", help="Version to set as @challenger.")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove @challenger.")] = False,
) -> None:
    """Set @challenger (a version that loads and scores its input example, not the champion),
    or remove it; the API shadows or canaries it as READMIT_CHALLENGER_MODE says."""
    from readmit.registry import RegistryError, clear_challenger, set_challenger

    if (version is not None) == clear:
        raise RegistryError("challenge: give --version N or --clear (one of them)")
    settings = Settings()
    if clear:
        removed = clear_challenger(settings)
        what = f"v{removed} is no longer @challenger" if removed else "no version was @challenger"
        console.print(f"[green]{settings.model_name}[/]: {what}", highlight=False)
        return
    assert version is not None
    previous = set_challenger(settings, version, reason="manual")
    replaced = f" (replacing v{previous})" if previous else ""
    console.print(
        f"[green]{settings.model_name} v{version} is @challenger[/]{replaced}; "
        f"API mode: {settings.challenger_mode}",
        highlight=False,
    )


@app.command()
@fails_cleanly
def rollback() -> None:
    """Give @production back to the version that held it before."""
    from readmit.registry import rollback as rollback_production
    from readmit.repair import repair

    settings = Settings()
    for line in repair(settings):
        _say(f"repaired: {line}")
    old, new = rollback_production(settings)
    console.print(f"[green]{settings.model_name} rolled back[/]: v{old} -> v{new} @production")


@app.command()
@fails_cleanly
def outcomes(
    file: Annotated[Path, typer.Argument(help="CSV with columns encounter_id and readmitted.")],
) -> None:
    """Load outcomes ("<30", ">30", "NO") of scored encounters into monitor-db; idempotent."""
    from readmit.monitoring.outcomes import load_outcomes_file
    from readmit.storage.db import safe_url

    settings = Settings()
    console.print(
        f"[bold]outcomes[/] {file} -> {safe_url(settings.resolved_monitor_db_url)}",
        highlight=False,
    )
    clock = time.perf_counter()
    counts = load_outcomes_file(settings, file, lambda done, total: _say(f"{done:,} / {total:,}"))
    console.print(
        f"[green]outcomes done[/]: {counts.received:,} received, {counts.inserted:,} inserted, "
        f"{counts.updated:,} updated (corrections), {counts.unchanged:,} unchanged, "
        f"{counts.unmatched:,} unmatched (never scored), {time.perf_counter() - clock:.1f} s",
        highlight=False,
    )


@app.command()
@fails_cleanly
def monitor(
    window: Annotated[
        str | None,
        typer.Option(
            help="How far back: 7d, 36h, 90m or all (default: READMIT_MONITOR_WINDOW_DAYS)."
        ),
    ] = None,
    rows: Annotated[
        int | None,
        typer.Option(
            min=1, help="At most the newest N predictions (default: READMIT_MONITOR_WINDOW_ROWS)."
        ),
    ] = None,
    model_version: Annotated[
        str | None, typer.Option(help="Judge this version (default: the one serving production).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object only.")] = False,
) -> None:
    """Judge logged predictions: drift against the model's training data, live performance
    once outcomes are in, and a verdict (ok, drift, degraded, insufficient-data)."""
    import json

    from readmit.monitoring.monitor import MonitorWindow, run_monitor

    settings = Settings()
    days = settings.monitor_window_days if window is None else MonitorWindow.parse_days(window)
    chosen = MonitorWindow(
        days=days, rows=rows or settings.monitor_window_rows, model_version=model_version
    )
    out = err_console if as_json else console
    out.print(f"[bold]monitor[/] {chosen.describe()}", highlight=False)
    clock = time.perf_counter()
    # Libraries print to stdout too (MLflow names each run's URL): with --json, stdout holds
    # the JSON object only.
    quiet = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    with quiet:
        result = run_monitor(settings, chosen, lambda line: out.print(f"  {line}", highlight=False))
    if as_json:
        print(json.dumps(result.as_json(), default=str))
        return
    for reason in result.reasons:
        _say(reason)
    colour = {"ok": "green", "drift": "yellow", "degraded": "red"}.get(result.verdict, "blue")
    auc = "n/a" if result.live_auc is None else f"{result.live_auc:.4f}"
    console.print(
        f"[{colour}]verdict {result.verdict}[/]: {result.rows:,} predictions of "
        f"{result.model_name or '-'} version {result.model_version or '-'}, "
        f"{result.labelled_rows:,} with outcomes, live ROC-AUC {auc}, "
        f"drifted: {', '.join(result.drifted_features) or 'none'}; "
        f"run {result.monitor_run_id} in monitor_runs, "
        f"MLflow run {result.mlflow_run_id or 'none'}, "
        f"{time.perf_counter() - clock:.1f} s",
        highlight=False,
    )


@app.command()
@fails_cleanly
def compare(
    window: Annotated[
        str | None,
        typer.Option(
            help="How far back: 90d, 36h, 90m or all (default: READMIT_COMPARE_WINDOW_DAYS)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object only.")] = False,
    apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="Tag the figures on both versions; on promote, put the challenger in production.",
        ),
    ] = False,
) -> None:
    """Champion against challenger on logged scores with outcomes: the ROC-AUC difference with
    a patient-level 95% interval, Brier scores, and a decision (promote, keep, wait)."""
    import json

    from readmit.monitoring.compare import run_compare
    from readmit.monitoring.monitor import MonitorWindow

    settings = Settings()
    days = settings.compare_window_days if window is None else MonitorWindow.parse_days(window)
    out = err_console if as_json else console
    where = "all time" if days is None else f"last {days:g} days"
    out.print(f"[bold]compare[/] champion and challenger, {where}", highlight=False)
    clock = time.perf_counter()
    quiet = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    with quiet:
        result = run_compare(
            settings, days, apply, lambda line: out.print(f"  {line}", highlight=False)
        )
    if as_json:
        print(json.dumps(result.as_json(), default=str))
        return
    for arm in (result.champion, result.challenger):
        auc = "n/a" if arm.roc_auc is None else f"{arm.roc_auc:.4f}"
        brier = "n/a" if arm.brier is None else f"{arm.brier:.4f}"
        _say(
            f"{arm.variant} {arm.model_name or '-'} v{arm.model_version or '-'}: "
            f"{arm.labelled:,} labelled, ROC-AUC {auc}, Brier {brier}"
        )
    for reason in result.reasons:
        _say(reason)
    if result.labelled_needed is not None and result.decision != "promote":
        _say(f"at this difference, about {result.labelled_needed:,} labelled encounters decide")
    colour = {"promote": "green", "keep": "yellow"}.get(result.decision, "blue")
    applied = "applied" if result.applied else "not applied"
    console.print(
        f"[{colour}]compare done[/]: {result.line()}; {applied}; "
        f"comparison {result.comparison_id} in monitor-db, {time.perf_counter() - clock:.1f} s",
        highlight=False,
    )


@app.command()
@fails_cleanly
def serve() -> None:
    """Serve the @production model over HTTP (host, port and limits from the settings)."""
    from readmit.serving.server import serve as serve_api

    settings = Settings()
    console.print(
        f"API on http://{settings.api_host}:{settings.api_port} (docs at /docs, "
        f"{settings.api_workers} worker(s)), serving "
        f"models:/{settings.model_name}@production from {safe_url(settings.resolved_tracking_uri)}",
        highlight=False,
    )
    serve_api(settings)


@app.command()
@fails_cleanly
def ui() -> None:
    """Serve the web UI (host and port from the settings); it calls the API at READMIT_API_URL."""
    from pathlib import Path

    import readmit.ui

    settings = Settings()
    script = Path(readmit.ui.__file__).parent / "app.py"
    console.print(
        f"UI on http://{settings.ui_host}:{settings.ui_port}, "
        f"calling the API at {settings.api_url}",
        highlight=False,
    )
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(script),
        "--server.address",
        settings.ui_host,
        "--server.port",
        str(settings.ui_port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
    ]
    # Streamlit takes this process's place, so a signal sent to `readmit ui` reaches it and no
    # child is left behind holding the port.
    sys.stdout.flush()
    os.execv(command[0], command)


@app.command()
@fails_cleanly
def loadtest(
    url: Annotated[str, typer.Option(help="Base URL of the API.")] = DEFAULT_API_URL,
    users: Annotated[int, typer.Option(help="Concurrent Locust users.")] = 20,
    seconds: Annotated[int, typer.Option(help="How long to run.")] = 30,
) -> None:
    """Run Locust headless against the API; exit 1 when the SLOs are violated."""
    from readmit.loadtest import run

    settings = Settings()
    console.print(f"[bold]loadtest[/] {url}: {users} users for {seconds} s", highlight=False)
    result = run(settings, url, users, seconds)
    console.print(result.summary(), highlight=False)
    if not result.meets_slo:
        raise typer.Exit(code=1)


@app.command()
@fails_cleanly
def simulate(
    url: Annotated[str, typer.Option(help="Base URL of the API.")] = DEFAULT_API_URL,
    scenario: Annotated[
        str,
        typer.Option(
            help="steady, case-mix, a1c-measured, specialty-missing, hours-for-days, poor-ranking."
        ),
    ] = "steady",
    records: Annotated[int, typer.Option(help="Encounters of the test split to send.")] = 2000,
    outcome_delay: Annotated[
        str, typer.Option(help="Wait after scoring before the outcomes are posted (30s, 5m, 1h).")
    ] = "0",
    seed: Annotated[int, typer.Option(help="Seed of the sample of encounters.")] = 0,
    outcomes: Annotated[
        bool, typer.Option(help="Post the outcomes (--no-outcomes: score only).")
    ] = True,
) -> None:
    """Replay test-split encounters (as they are, or shifted) through the API, then post
    their true outcomes to /outcomes."""
    from readmit.monitoring.simulate import parse_delay, scenario_of
    from readmit.monitoring.simulate import simulate as run_simulation

    settings = Settings()
    chosen, delay = scenario_of(scenario), parse_delay(outcome_delay)
    when = f"outcomes after {delay:.0f} s" if outcomes else "no outcomes"
    console.print(
        f"[bold]simulate[/] {chosen.name} ({chosen.about}): {records:,} records to {url}, {when}",
        highlight=False,
    )
    result = run_simulation(
        settings, url, chosen.name, records, delay, seed, report=_say, outcomes=outcomes
    )
    console.print(f"[green]simulate done[/]: {result.summary()}", highlight=False)


@app.command()
@fails_cleanly
def exporter(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option(help="Port of /metrics (default: READMIT_EXPORTER_PORT).")
    ] = None,
) -> None:
    """Expose pipeline and model metrics (batches, rows, step times, production AUC)."""
    from readmit.exporter import serve_forever
    from readmit.logs import configure_json_logging

    settings = Settings()
    port = settings.exporter_port if port is None else port
    configure_json_logging(settings.log_level)
    console.print(f"pipeline metrics on http://{host}:{port}/metrics", highlight=False)
    serve_forever(settings, host, port)


@app.command("mlflow-server")
@fails_cleanly
def mlflow_server() -> None:
    """Run the MLflow tracking server of the settings in the foreground."""
    from readmit.stack.mlflow_server import run_mlflow_server, standalone_mlflow_env
    from readmit.stack.services import mlflow_server_command

    settings = Settings()
    command = mlflow_server_command(settings)
    url = f"http://{settings.mlflow_host}:{settings.mlflow_port}"
    store = safe_url(settings.resolved_backend_store_uri)
    artifacts = safe_url(settings.resolved_artifacts_destination)
    console.print(f"MLflow server on {url}; store {store}; artifacts {artifacts}", highlight=False)
    sys.stdout.flush()
    run_mlflow_server(command, standalone_mlflow_env(settings))


@app.command("s3-server")
@fails_cleanly
def s3_server(
    port: Annotated[
        int | None, typer.Option(help="Port on 127.0.0.1 (default: READMIT_S3_PORT).")
    ] = None,
    bucket: Annotated[str, typer.Option(help="Bucket to create.")] = BUCKET,
) -> None:
    """Run a local S3-compatible server with the artifact bucket, its objects on disk under
    <data dir>/s3store."""
    from readmit.stack.foreground import start_s3_server

    settings = Settings()
    port = settings.s3_port if port is None else port
    store = settings.data_dir.resolve() / "s3store"
    service = start_s3_server(port, settings.data_dir / "logs" / "s3.log", store, bucket)
    console.print(
        f"S3 on {service.url} with bucket {bucket}, objects in {store}; Ctrl-C stops it",
        highlight=False,
    )
    try:
        service.process.wait()
    except KeyboardInterrupt:
        service.stop()


@app.command()
@fails_cleanly
def pipeline() -> None:
    """Run the main job: ingest every pending batch, clean, materialise the patient history,
    train and register."""
    settings = Settings()
    clock = time.perf_counter()
    run_ingest(settings, all_batches=True)
    run_clean(settings)
    run_materialise(settings)
    run_train(settings)
    console.print(
        f"[bold green]pipeline done[/] in {time.perf_counter() - clock:.1f} s; "
        f"state under {settings.data_dir.resolve()}",
        highlight=False,
    )


@app.command()
@fails_cleanly
def status() -> None:
    """Show batches, rows per table, the last clean build and the @production model."""
    from readmit.status import collect_status, production_model

    settings = Settings()
    state = collect_status(settings)
    batches = Table(title=f"batches in {safe_url(settings.resolved_raw_db_url)}")
    for name in ("batch", "status", "rows", "train", "validation", "test", "dup", "rejected"):
        batches.add_column(name, justify="right")
    for b in state.batches:
        batches.add_row(
            str(b["batch_id"]),
            b["status"],
            f"{b['rows_read']:,}",
            f"{b['rows_train']:,}",
            f"{b['rows_validation']:,}",
            f"{b['rows_test']:,}",
            f"{b['rows_duplicate']:,}",
            f"{b['rows_rejected']:,}",
        )
    console.print(batches)
    tables = Table(title="rows per table")
    tables.add_column("table")
    tables.add_column("rows", justify="right")
    for name, rows in state.table_rows.items():
        tables.add_row(name, f"{rows:,}")
    console.print(tables)
    if state.last_build is None:
        console.print("no clean build yet")
    else:
        b = state.last_build
        console.print(
            f"last clean build {b['build_id']} at {b['created_at']}: batches {b['raw_batches']}, "
            f"rows {b['rows']}, {b['features']} encoded columns",
            highlight=False,
        )
    model = production_model(settings)
    colour = {"present": "green", "missing": "red"}.get(model.artifacts, "yellow")
    console.print(
        f"model: {model.detail}; artifacts [{colour}]{model.artifacts}[/]", highlight=False
    )


stack_app = typer.Typer(
    help="The full stack on this machine: PostgreSQL, S3, MLflow, Airflow, API, UI, Prometheus.",
    no_args_is_help=True,
)
app.add_typer(stack_app, name="stack")


@stack_app.command("up")
@fails_cleanly
def stack_up() -> None:
    """Start every service on 127.0.0.1, wait until all are healthy, print URLs and logins."""
    from readmit.stack.credentials import MLFLOW_USER
    from readmit.stack.up import up

    settings = Settings()
    clock = time.perf_counter()
    console.print(f"[bold]stack up[/] (state under {settings.data_dir.resolve() / 'stack'})")
    stack = up(settings, report=_say)
    ends, keys, paths = stack.endpoints, stack.secrets, stack.paths
    rows = [
        ("Airflow", ends.airflow, f"login admin / {keys.airflow_password}"),
        ("API", f"{ends.api}/docs", f"X-API-Key {keys.api_key} for POST /reload-model"),
        ("UI", ends.ui, ""),
        ("MLflow", ends.mlflow, f"login {MLFLOW_USER} / {keys.mlflow_password}"),
        ("Prometheus", ends.prometheus, ""),
        ("pipeline exporter", f"{ends.exporter}/metrics", ""),
        ("S3", ends.s3, f"key {keys.s3_access_key} / secret {keys.s3_secret_key}"),
    ] + [(f"PostgreSQL {n}", safe_url(u), "") for n, u in ends.databases.items()]
    took = time.perf_counter() - clock
    console.print(f"[bold green]readmit stack is up[/] in {took:.0f} s", highlight=False)
    for name, where, login in rows:
        console.print(f"  {name:<19} {where:<58} {login}".rstrip(), highlight=False)
    console.print(
        f"logs: {paths.logs}; settings for `readmit` commands against the stack: "
        f"set -a; . {paths.env_file}; set +a. DAG 1 loads a batch on its schedule "
        f"({settings.ingest_schedule}, the first run at once); trigger it in Airflow for the "
        "next one. `readmit stack down` stops everything.",
        highlight=False,
    )


@stack_app.command("down")
@fails_cleanly
def stack_down() -> None:
    """Stop every process `stack up` started (whole process groups), and nothing else."""
    from readmit.stack.down import down

    settings = Settings()
    stopped = down(settings, report=_say)
    where = settings.data_dir.resolve() / "stack"
    console.print(
        f"[green]stack down[/]: {len(stopped)} service(s) stopped"
        if stopped
        else f"stack down: nothing was running from {where} (READMIT_DATA_DIR)",
        highlight=False,
    )


@stack_app.command("status")
@fails_cleanly
def stack_status() -> None:
    """Each service's process and health; exit 1 when one is not healthy."""
    from readmit.stack.status import status as stack_state

    services = stack_state(Settings())
    table = Table(title="readmit stack")
    for name in ("service", "pid", "health", "detail"):
        table.add_column(name)
    for s in services:
        pid = str(s.pid) if s.running else ("-" if s.pid is None else f"{s.pid} (gone)")
        health = "[green]healthy[/]" if s.healthy else "[red]down[/]"
        table.add_row(s.name, pid, health, s.detail)
    console.print(table)
    if not all(s.healthy for s in services):
        raise typer.Exit(code=1)


if __name__ == "__main__":
    app()
