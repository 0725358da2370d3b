"""clean-db: cleaned features per split, and the clean builds with their fitted transform."""

from __future__ import annotations

import sqlalchemy as sa

from readmit.features import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from readmit.split import SPLITS

metadata = sa.MetaData()


def _split_table(split: str) -> sa.Table:
    return sa.Table(
        f"clean_{split}",
        metadata,
        sa.Column("build_id", sa.String(32), nullable=False, index=True),
        sa.Column("encounter_id", sa.BigInteger, nullable=False),
        sa.Column("patient_nbr", sa.BigInteger, nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.Column("label", sa.SmallInteger, nullable=False),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in NUMERIC_FEATURES),
        *(sa.Column(name, sa.Text, nullable=True) for name in CATEGORICAL_FEATURES),
        sa.UniqueConstraint("build_id", "encounter_id", name=f"uq_clean_{split}_encounter"),
    )


SPLIT_TABLES: dict[str, sa.Table] = {split: _split_table(split) for split in SPLITS}

clean_build = sa.Table(
    "clean_build",
    metadata,
    sa.Column("build_id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("raw_batches", sa.JSON, nullable=False),
    sa.Column("source_sha256", sa.JSON, nullable=False),
    sa.Column("rows", sa.JSON, nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("transform", sa.JSON, nullable=False),
)
