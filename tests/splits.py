"""The patient split rule written out again for tests, independent of `readmit.split`, and a
check that raw-db and clean-db hold no patient in two splits."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from readmit.stack import postgres

DEFAULT_SALT = "readmit-split-v1"


def reference_split(patient_nbr: int, salt: str = DEFAULT_SALT) -> str:
    """SHA-256 of "salt:patient", its first 8 bytes as a fraction of 2**64, cut at 0.70 and
    0.85 (the rule the design notes give)."""
    digest = hashlib.sha256(f"{salt}:{patient_nbr}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "train" if position < 0.70 else "validation" if position < 0.85 else "test"


def patient_splits(db_url: str, tables: str = "raw") -> dict[int, set[str]]:
    """Every patient of raw-db (TABLES "raw") or clean-db ("clean", every build) and the splits
    its rows are stored in."""
    engine = sa.create_engine(db_url)
    found: dict[int, set[str]] = {}
    with engine.connect() as conn:
        for split in ("train", "validation", "test"):
            query = sa.text(f"select distinct patient_nbr from {tables}_{split}")
            rows = conn.execute(query).all()
            for (patient,) in rows:
                found.setdefault(int(patient), set()).add(split)
    engine.dispose()
    return found


def patients_in_several_batches(raw_db_url: str) -> int:
    """How many patients have rows in more than one batch: what makes the check meaningful."""
    union = " union all ".join(
        f"select patient_nbr, batch_id from raw_{s}" for s in ("train", "validation", "test")
    )
    query = (
        f"select count(*) from (select patient_nbr from ({union}) as rows "
        "group by patient_nbr having count(distinct batch_id) > 1) as spread"
    )
    engine = sa.create_engine(raw_db_url)
    with engine.connect() as conn:
        count = conn.execute(sa.text(query)).scalar_one()
    engine.dispose()
    return int(count)


def assert_one_split_per_patient(
    db_url: str, tables: str = "raw", salt: str = DEFAULT_SALT
) -> None:
    """No patient in two splits, and each in the split the rule gives."""
    found = patient_splits(db_url, tables)
    assert found, f"{tables}-db holds no rows"
    several = {p: s for p, s in found.items() if len(s) > 1}
    assert not several, (
        f"{tables}: patients in more than one split: {dict(list(several.items())[:5])}"
    )
    wrong = {p: s for p, s in found.items() if s != {reference_split(p, salt)}}
    assert not wrong, (
        f"{tables}: patients in another split than the rule's: {dict(list(wrong.items())[:5])}"
    )


def assert_batches_keep_patients_together(raw_db_url: str, clean_db_url: str) -> None:
    """Batches loaded by separate processes put each patient in one split, raw and clean; some
    patient has rows in more than one batch, so the check could have failed."""
    assert patients_in_several_batches(raw_db_url) > 0, "no patient spans two batches"
    assert_one_split_per_patient(raw_db_url, "raw")
    assert_one_split_per_patient(clean_db_url, "clean")


def assert_stack_keeps_patients_together(env: dict[str, str]) -> None:
    """`assert_batches_keep_patients_together` on the databases of the stack of ENV."""
    urls = postgres.database_urls(env["READMIT_STACK_POSTGRES_URL"], env["READMIT_STACK_DB_PREFIX"])
    assert_batches_keep_patients_together(urls["raw"], urls["clean"])
