"""workbench: a numpy backprop research workbench (training core, monitoring, MLflow tracking, studies)."""

__version__ = "0.1.0"


def load_model(run_id: str, tracking_uri: str | None = None):
    """The trained model of MLflow run `run_id` (its `model/` artifact), ready to `predict`."""
    from workbench.tracking import load_model as _load_model

    return _load_model(run_id, tracking_uri)


def explain(model, X, y=None, **options):
    """Attributions, feature and unit importance of `model` on (X, y): `workbench.explain.explain`."""
    from workbench.explain import explain as _explain

    return _explain(model, X, y, **options)
