"""readmit: 30-day readmission prediction for diabetic inpatients, from raw data to serving."""

__version__ = "0.1.0"
