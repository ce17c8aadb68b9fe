"""Diagnosis of a training run from its statistics record: verdicts, evidence, advice.

    from workbench.diagnose import diagnose_record
    diagnosis = diagnose_record(run.record, spec=run.spec)
    diagnosis.verdict          # "healthy" or the most severe finding's verdict
    diagnosis.findings         # each: verdict, severity, layers, first_step, evidence, advice
    print(diagnosis.report()); diagnosis.to_json()

- thresholds.py: every number the rules use, with its source (`TABLE`).
- rules.py, gradient_rules.py, unit_rules.py, lr_rules.py: the rules (per-row conditions, findings).
- engine.py: `Diagnoser` (incremental, persistence), `diagnose_record`.
- findings.py: `Finding`, `Diagnosis`, `VERDICTS` (severity and order).
- report.py, figure.py: the text report and the diagnosis figure.
- live.py: `LiveDiagnosis`, the hook that diagnoses while training and can stop a sick run.

Diagnosis is pure: a record and a spec in, a diagnosis out. Finding a tracked run, downloading
its record and logging the result is MLflow's side: `workbench.tracking.diagnosis`.
Importing this package imports neither mlflow nor matplotlib; the functions that need them do.
"""

from workbench.diagnose.engine import Diagnoser, diagnose_record
from workbench.diagnose.findings import HEALTHY, VERDICTS, Diagnosis, Finding
from workbench.diagnose.live import STOP_ON_SICK, LiveDiagnosis

__all__ = [
    "HEALTHY",
    "STOP_ON_SICK",
    "VERDICTS",
    "Diagnoser",
    "Diagnosis",
    "Finding",
    "LiveDiagnosis",
    "diagnose_record",
]
