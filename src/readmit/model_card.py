"""The model card of a registered version, generated from what its training run logged.

Every figure, tag and table in the card is read back from MLflow (the run's tags, params,
metrics, candidate runs and `evidence/` artifacts, and the version's decision tags); the fixed
text says what holds for every readmit model (intended use, outcome, missing data, policy).
The card is logged as Markdown and HTML under `model_card/` of the run. Reporting follows the
headings TRIPOD+AI asks of a clinical prediction model.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from readmit.errors import ReadmitError, first_line
from readmit.registry import Tag, client_for
from readmit.settings import Settings

log = logging.getLogger(__name__)

# What training logs beside its metrics (readmit.evidence writes them; the card reads them).
SUBGROUPS_ARTIFACT = "evidence/subgroups.csv"
SUBGROUPS_PLOT = "evidence/subgroups.png"
AUDIT_ARTIFACT = "evidence/audit.json"
DECISION_CURVE_ARTIFACT = "evidence/decision_curve.csv"
DECISION_CURVE_PLOT = "evidence/decision_curve.png"
COHORT_ARTIFACT = "evidence/cohort.json"
CARD_MARKDOWN = "model_card/model_card.md"
CARD_HTML = "model_card/model_card.html"
MODEL_CARD_PATH = "/model-card"  # where the API serves the card of the model it serves
CURVE_POINTS = (0.05, 0.1, 0.15, 0.2, 0.3)


class ModelCardError(ReadmitError):
    """The card cannot be made or fetched (the run or its evidence is missing, MLflow down)."""


@dataclass
class RunRecord:
    """What one version's training run logged, as the card needs it."""

    name: str
    version: str
    run: Run
    candidates: list[Run]
    version_tags: dict[str, str]
    cohort: dict[str, Any]
    audit: dict[str, Any]
    subgroups: pd.DataFrame
    curve: pd.DataFrame
    images: dict[str, bytes] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.run.data.metrics)

    @property
    def params(self) -> dict[str, str]:
        return dict(self.run.data.params)

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.run.data.tags)


def read_run(client: MlflowClient, name: str, version: str) -> RunRecord:
    """Everything the card shows, from the registry and the version's run."""
    found = client.get_model_version(name, version)
    run = client.get_run(str(found.run_id))
    run_id = run.info.run_id
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")

    def text(path: str) -> str:
        return str(mlflow.artifacts.load_text(f"runs:/{run_id}/{path}"))

    def image(path: str) -> bytes:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)
        with open(local, "rb") as handle:
            return handle.read()

    try:
        cohort = mlflow.artifacts.load_dict(f"runs:/{run_id}/{COHORT_ARTIFACT}")
        audit = mlflow.artifacts.load_dict(f"runs:/{run_id}/{AUDIT_ARTIFACT}")
        subgroups = pd.read_csv(io.StringIO(text(SUBGROUPS_ARTIFACT)))
        curve = pd.read_csv(io.StringIO(text(DECISION_CURVE_ARTIFACT)))
        images = {p: image(p) for p in (SUBGROUPS_PLOT, DECISION_CURVE_PLOT)}
    except Exception as exc:  # MLflow raises many kinds: store, HTTP, S3, file system
        raise ModelCardError(
            f"model card: run {run_id} of {name} v{version} lacks its evidence "
            f"({first_line(exc)[:200]}); it was trained before cards were made"
        ) from None
    return RunRecord(
        name=name,
        version=str(version),
        run=run,
        candidates=sorted(children, key=lambda r: r.info.run_name or ""),
        version_tags=dict(found.tags),
        cohort=cohort,
        audit=audit,
        subgroups=subgroups,
        curve=curve,
        images=images,
    )


def _num(value: Any, digits: int = 4) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if math.isnan(number) else f"{number:.{digits}f}"


def _interval(row: Mapping[Any, Any], name: str, digits: int = 3) -> str:
    low, high = row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
    return f"{_num(row.get(name), digits)} [{_num(low, digits)}, {_num(high, digits)}]"


def _true(value: Any) -> bool:
    """A flag as read back from CSV (bool, or its text)."""
    return str(value).lower() == "true"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _per_split(facts: dict[str, Any], key: str) -> str:
    values = facts.get(key, {})
    splits = [s for s in ("train", "validation", "test") if s in values]
    return ", ".join(f"{int(values[s]):,} {s}" for s in splits)


def render_markdown(record: RunRecord, generated_at: str | None = None) -> str:
    """The card as Markdown, section by section."""
    generated_at = generated_at or datetime.now(UTC).isoformat(timespec="seconds")
    sections = [
        f"# Model card: {record.name} v{record.version}",
        f"Generated {generated_at} from MLflow run `{record.run.info.run_id}` and the registry "
        f"tags of v{record.version}; regenerate with `readmit model-card --version "
        f"{record.version}`.",
        _intended_use(),
        _lineage(record),
        _cohort(record),
        _outcome(record),
        _split(record),
        _missing_data(),
        _candidates(record),
        _metrics(record),
        _calibration(record),
        _threshold(record),
        _subgroups(record),
        _decision(record),
        _limitations(record),
        _policy(record),
    ]
    return "\n\n".join(sections) + "\n"


def _intended_use() -> str:
    return (
        "## Intended use and users\n"
        "Estimates, at discharge, the probability that an adult diabetic inpatient is "
        "readmitted within 30 days. Users: discharge planners, care coordinators and "
        "transitional-care nurses deciding whom to follow up first (a call, an early clinic "
        "visit, a medication review). It ranks patients for extra support; it is not a "
        "diagnosis, must not be used to deny or delay care, and has not been validated outside "
        "the hospitals and years of its data."
    )


def _lineage(record: RunRecord) -> str:
    tags, cohort = record.tags, record.cohort
    rows = [
        ["Clean build", f"`{tags.get(Tag.CLEAN_BUILD, cohort.get('clean_build', 'unknown'))}`"],
        ["Raw batches", tags.get(Tag.RAW_BATCHES, "unknown")],
        ["Dataset SHA-256", f"`{tags.get(Tag.DATASET_SHA256, 'unknown')}`"],
        ["Code commit", f"`{tags.get(Tag.GIT_COMMIT, 'unknown')}`"],
        ["Training run", f"`{record.run.info.run_id}`"],
        ["Encounters", _per_split(cohort, "rows")],
        ["Patients", _per_split(cohort, "patients")],
        ["Readmitted <30 days", _per_split(cohort, "positives")],
        ["Encoded columns", str(cohort.get("encoded_columns", "unknown"))],
    ]
    return (
        "## Data and lineage\n"
        'UCI "Diabetes 130-US hospitals for years 1999-2008" (Strack et al., 2014, CC BY 4.0), '
        "loaded in verified batches into raw-db and cleaned into the build below.\n\n"
        + _table(["", "Value"], rows)
    )


def _cohort(record: RunRecord) -> str:
    codes = record.cohort.get("dropped_dispositions", "") or "none"
    return (
        "## Cohort and exclusions\n"
        "Inpatient encounters of diabetic patients (1 to 14 days in hospital, as the data set "
        "was drawn). Excluded: encounters ending in death or hospice (discharge dispositions "
        f"{codes}), who cannot be readmitted. Every other encounter is kept, including a "
        "patient's repeat visits; a patient's history counts only earlier encounters."
    )


def _outcome(record: RunRecord) -> str:
    return (
        "## Outcome\n"
        'Readmitted within 30 days of discharge: the data set\'s `readmitted == "<30"`. '
        'Readmission after 30 days (">30") and none ("NO") are negatives. Test prevalence: '
        f"{_num(record.metrics.get('test_positive_rate'), 3)}."
    )


def _split(record: RunRecord) -> str:
    fractions = record.cohort.get("split_fractions", {})
    shares = "/".join(f"{round(float(v) * 100)}" for v in fractions.values()) or "unknown"
    return (
        "## Split\n"
        f"By patient ({shares} train/validation/test): a SHA-256 of `patient_nbr` salted with "
        f"`{record.cohort.get('split_salt', 'unknown')}`, so all of a patient's encounters sit "
        "in one split. Early stopping, the choice of model, calibration and the threshold use "
        "validation only; the test split is scored once, by the registered model's own path."
    )


def _missing_data() -> str:
    return (
        "## Missing data\n"
        "`?`, empty, null and NaN mean missing in every field (one rule for cleaning, the API "
        "and the model). A missing category is a value of its own (so a field that stops being "
        "recorded changes the input, and monitoring sees it); rare categories are pooled. A "
        "missing lab result (`max_glu_serum`, `A1Cresult`) means the test was not taken. A "
        "caller that cannot count the patient's earlier encounters sends none (0). No rows are "
        "dropped for missing values and nothing is imputed from other patients."
    )


def _candidates(record: RunRecord) -> str:
    chosen = record.params.get("chosen_estimator", "unknown")
    rows = []
    for run in record.candidates:
        metrics, params = run.data.metrics, run.data.params
        shown = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
        rows.append(
            [
                f"**{chosen}**" if run.info.run_name == chosen else str(run.info.run_name),
                _num(metrics.get("validation_roc_auc")),
                _num(metrics.get("best_iteration"), 0),
                shown[:400],
            ]
        )
    return (
        "## Candidates and the choice\n"
        f"Chosen: **{chosen}**, the best validation ROC-AUC.\n\n"
        + _table(["Candidate", "Validation ROC-AUC", "Rounds", "Parameters"], rows)
    )


def _metrics(record: RunRecord) -> str:
    m = record.metrics
    rows = [
        [
            "ROC-AUC",
            f"{_num(m.get('test_roc_auc'))} [{_num(m.get('test_roc_auc_ci_low'))}, "
            f"{_num(m.get('test_roc_auc_ci_high'))}] (95% CI, patient bootstrap)",
        ],
        ["PR-AUC (average precision)", _num(m.get("test_pr_auc"))],
        ["Brier score", _num(m.get("test_brier"))],
        ["Sensitivity at the threshold", _num(m.get("test_sensitivity"))],
        ["Specificity at the threshold", _num(m.get("test_specificity"))],
        ["PPV at the threshold", _num(m.get("test_ppv"))],
        ["Share flagged", _num(m.get("test_flagged_rate"))],
        ["Test encounters", _num(m.get("test_rows"), 0)],
    ]
    return "## Metrics (test split)\n" + _table(["Metric", "Value"], rows)


def _calibration(record: RunRecord) -> str:
    m, p = record.metrics, record.params
    applied = str(p.get("calibrated", "")).lower() == "true"
    return (
        "## Calibration\n"
        f"Platt scaling {'applied' if applied else 'not applied'}: out-of-fold validation Brier "
        f"{_num(m.get('validation_brier_calibrated'))} with it, "
        f"{_num(m.get('validation_brier_raw'))} without. Test Brier "
        f"{_num(m.get('test_brier'))}; observed readmission rate "
        f"{_num(m.get('test_positive_rate'), 3)}. Calibration by subgroup (observed minus "
        "mean predicted) is in the subgroup table."
    )


def _threshold(record: RunRecord) -> str:
    m, curve = record.metrics, record.curve
    threshold = float(m.get("test_threshold", float("nan")))
    points = curve[curve["chosen"].map(_true)]
    others = curve[curve["threshold"].round(2).isin(CURVE_POINTS)]
    rows = [
        [
            f"{float(r['threshold']):.3f}" + (" (chosen)" if _true(r["chosen"]) else ""),
            _num(r["net_benefit_model"]),
            _num(r["net_benefit_treat_all"]),
            _num(r["flagged_rate"], 3),
            _num(r["number_needed_to_evaluate"], 1),
        ]
        for r in pd.concat([others, points]).sort_values("threshold").to_dict("records")
    ]
    return (
        "## Threshold and decision curve\n"
        f"Threshold {threshold:.4f} ({record.params.get('threshold_rule', 'unknown')}). At it, "
        f"net benefit {_num(m.get('test_net_benefit'))} and "
        f"{_num(m.get('test_number_needed_to_evaluate'), 1)} flagged patients are evaluated "
        "per readmission found (1 / PPV). Net benefit charges each false alarm t/(1-t) of a "
        "readmission found; the model is useful where its curve lies above flagging everyone "
        "and above flagging no one (0).\n\n"
        + _table(
            [
                "Threshold",
                "Net benefit (model)",
                "Flag everyone",
                "Share flagged",
                "Evaluated per case",
            ],
            rows,
        )
    )


def _subgroups(record: RunRecord) -> str:
    audit = record.audit
    verdict = "passed" if audit.get("passed") else "failed"
    rows = [
        [
            f"{r['attribute']}: {r['group']}" + (" (small)" if _true(r["small"]) else ""),
            f"{int(r['encounters']):,}",
            f"{int(r['positives']):,}",
            _interval(r, "roc_auc"),
            f"{_num(r['observed_rate'], 3)} / {_num(r['mean_predicted'], 3)}",
            _interval(r, "calibration_gap"),
            _interval(r, "sensitivity", 2),
            _interval(r, "ppv", 2),
            _interval(r, "flagged_rate", 2),
        ]
        for r in record.subgroups.to_dict("records")
    ]
    failures = "".join(f"\n- {f}" for f in audit.get("failures", []))
    return (
        "## Subgroup results\n"
        f"Audit **{verdict}** on the test split, figures with 95% patient-bootstrap intervals "
        f"({audit.get('bootstrap_rounds', 'n/a')} rounds). Rule: a group with at least "
        f"{audit.get('min_positives')} positives blocks promotion when its ROC-AUC interval "
        f"lies wholly below the overall {_num(audit.get('overall_roc_auc'), 3)} minus "
        f"{audit.get('max_auc_gap')}, or its calibration gap interval lies wholly beyond "
        f"±{audit.get('max_calibration_gap')}. Groups with fewer positives are marked small: "
        f"shown, not gated.{failures}\n\n"
        + _table(
            [
                "Group",
                "Encounters",
                "Positives",
                "ROC-AUC [CI]",
                "Observed / predicted",
                "Calibration gap [CI]",
                "Sensitivity [CI]",
                "PPV [CI]",
                "Flagged [CI]",
            ],
            rows,
        )
    )


def _decision(record: RunRecord) -> str:
    tags = record.version_tags
    lines = [
        f"- Decision: {tags.get(Tag.DECISION, 'none recorded')}",
        f"- Reason: {tags.get(Tag.DECISION_REASON, 'none recorded')}",
        f"- Subgroup audit: {tags.get(Tag.AUDIT, 'not recorded')}",
    ]
    if Tag.AUDIT_OVERRIDE in tags:
        lines.append(f"- Audit overridden by hand: {tags[Tag.AUDIT_OVERRIDE]}")
    return "## Promotion decision\n" + "\n".join(lines)


def _limitations(record: RunRecord) -> str:
    table = record.subgroups
    marked = table[table["small"].map(_true)]
    small = [f"{a}: {g}" for a, g in zip(marked["attribute"], marked["group"], strict=True)]
    small_text = ", ".join(small) if small else "none"
    return (
        "## Limitations\n"
        "- Data from 130 US hospitals in 1999-2008: coding, care and payers have changed since; "
        "the model has not been validated on other hospitals or years.\n"
        "- The data set has no dates: the split is by patient, not by time, so a drift over "
        "time is not part of this evaluation (monitoring watches for it).\n"
        "- Readmissions to other hospitals are not in the data; the outcome undercounts them.\n"
        "- Discrimination is moderate: use it to rank follow-up, not to decide care alone.\n"
        f"- Groups too small to judge (marked small): {small_text}."
    )


def _policy(record: RunRecord) -> str:
    c = record.cohort
    return (
        "## Monitoring and update policy\n"
        "Every scored encounter is logged with its model version; outcomes come back 30 days "
        f"later. `readmit monitor` judges the last {c.get('monitor_window_days', 'n/a')} days "
        f"(at most {c.get('monitor_window_rows', 'n/a')} predictions): input drift against "
        "this run's training inputs, probability drift against its test probabilities, and live "
        "ROC-AUC and calibration once enough outcomes arrive; a drifted or degraded verdict asks "
        "for retraining. A retrained version replaces this one only when it passes its own "
        f"subgroup audit and gains at least {c.get('promote_min_delta', 'n/a')} test ROC-AUC on "
        "the same test set; a person may promote or roll back by hand (`readmit promote`, "
        "`readmit rollback`), and overriding a failed audit needs a recorded reason."
    )


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
  line-height: 1.45; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
code {{ font-size: 0.85rem; }}
img {{ max-width: 100%; }}
</style></head><body>
{body}
{figures}
</body></html>
"""


def render_html(markdown: str, record: RunRecord) -> str:
    """The Markdown as a standalone page, with the audit and decision-curve plots inline."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    figures = "".join(
        f'<figure><img alt="{html.escape(path)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode()}"><figcaption>{html.escape(path)}</figcaption></figure>'
        for path, data in record.images.items()
    )
    title = html.escape(f"Model card: {record.name} v{record.version}")
    return PAGE.format(title=title, body=body, figures=figures)


@dataclass
class ModelCard:
    version: str
    run_id: str
    markdown: str
    html: str


def write_model_card(settings: Settings, version: str) -> ModelCard:
    """Generate the card of `version` from its run and log it (Markdown and HTML) to that run."""
    client = client_for(settings)
    record = read_run(client, settings.model_name, version)
    markdown = render_markdown(record)
    page = render_html(markdown, record)
    run_id = record.run.info.run_id
    client.log_text(run_id, markdown, CARD_MARKDOWN)
    client.log_text(run_id, page, CARD_HTML)
    return ModelCard(str(version), run_id, markdown, page)


def fetch_card(settings: Settings, run_id: str, kind: str = "markdown") -> str:
    """The logged card of a run, Markdown or HTML (ModelCardError when it cannot be read)."""
    path = CARD_HTML if kind == "html" else CARD_MARKDOWN
    client_for(settings)
    try:
        return str(mlflow.artifacts.load_text(f"runs:/{run_id}/{path}"))
    except Exception as exc:  # MLflow raises many kinds: store, HTTP, S3, file system
        raise ModelCardError(
            f"model card: {path} of run {run_id} could not be read: {first_line(exc)[:200]}"
        ) from None


def card_line(settings: Settings, version: str) -> str:
    """Write the card of a just-registered version; a card that cannot be written is said,
    and does not undo the version (`readmit model-card` writes it later)."""
    try:
        card = write_model_card(settings, version)
    except Exception as exc:  # the version stands; its card can be made again
        log.warning("model card not written", extra={"model_version": version, "reason": str(exc)})
        return f"model card of v{version} not written: {first_line(exc)[:300]}"
    return f"model card: {CARD_MARKDOWN} and {CARD_HTML} of run {card.run_id}"
