"""The patient history feature store (Feast): definitions, materialisation, retrieval, lookup."""
