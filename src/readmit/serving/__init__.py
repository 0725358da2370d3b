"""The prediction API: FastAPI app, routes, model store, metrics."""
