"""Recurrent cell x recurrent init x gradient clipping on the adding problem, each at its tuned learning rate.

The adding problem (Le, Jaitly & Hinton 2015's form of Hochreiter & Schmidhuber 1997's): sum the two
marked values of a sequence; predicting the mean scores MSE 0.167, so a val/loss near it learned
nothing. Every combination of cell (tanh rnn, lstm, gru), recurrent init (orthogonal, Saxe et al.
2014; identity, Le et al. 2015; normal N(0, 1/units), radius 1) and clipping (none, or the global
norm at a threshold the tuning searches, Pascanu et al. 2013) is an arm (3 x 3 x 2 = 18), tuned with
the same budget over the learning rate (and the threshold), then confirmed on fresh seeds and scored
on the test split (test/loss, the MSE); the report gives each arm's verdicts, among them
vanishing_through_time and exploding_through_time. Protocol and references:
workbench/studies/comparison.py.

    python studies/recurrent.py --quick            # 10 steps, 1,000 sequences: a few minutes on 2 cores
    python studies/recurrent.py --workers 2        # 50 steps, the full budget; rerun to resume
"""

from workbench.studies import Comparison, Float, Quick

CELLS = ("rnn", "lstm", "gru")
RECURRENT_INITS = ("orthogonal", "identity", "normal")
UNITS = 32


class Cell(dict):
    """A one-layer list item that reads as `lstm/orthogonal` in the arm labels and the report."""

    def __str__(self) -> str:
        return f"{self['type']}/{self['recurrent_init']}"

    __repr__ = __str__


LAYERS = [[Cell(type=cell, units=UNITS, recurrent_init=init)] for cell in CELLS for init in RECURRENT_INITS]

comparison = Comparison(
    name="recurrent",
    description=__doc__.splitlines()[0],
    base={"data": {"source": "adding", "sequence_length": 50, "n_samples": 4000},
          "model": {"init": "xavier_uniform", "layers": [{"type": "lstm", "units": UNITS}]},
          "optimizer": {"name": "adam"}, "training": {"loss": "mse", "epochs": 20, "batch_size": 50},
          "monitor": {"every": 5, "log_every": 10}},
    compare={"model.layers": LAYERS, "clipping.mode": ["none", "global_norm"]},
    tune={"optimizer.lr": Float(1e-4, 3e-2, log=True), "clipping.max_norm": Float(0.1, 10.0, log=True)},
    metric="val/loss", direction="minimize", seeds=2, trials_per_arm=8, confirm_seeds=5,
    quick=Quick(n_trials=2, seeds=1, confirm_seeds=2,
                overrides={"data.sequence_length": 10, "data.n_samples": 1000, "training.epochs": 8}),
)

if __name__ == "__main__":
    comparison.main()
