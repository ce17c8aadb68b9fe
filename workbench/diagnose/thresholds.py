"""Every number the diagnosis rules use, named, with where it comes from.

Rules read these constants and nothing else, so a reader can check a verdict
against its source and a study can audit what "sick" means. `TABLE` lists them
(name, value, source) for the report and the docs; a test checks that every
constant is in it.

Where a threshold is applied to a different measurement than in its source,
the entry says so and why. Thresholds we chose ourselves say "ours" and give
the measurements behind the choice (healthy reference runs: the digits MLP of
experiments/digits_mlp.toml, moons, circles with batch norm, spirals with five
layers, breast cancer, a synthetic regression and diabetes, tanh and sigmoid
MLPs with Xavier initialization, 10- and 30-layer ReLU MLPs with He initialization).
"""

from __future__ import annotations

from dataclasses import dataclass

# -- persistence -------------------------------------------------------------------------------
PERSISTENCE_WINDOW = 40
PERSISTENCE_FRACTION = 0.5
MIN_PERSISTENT_ROWS = 3
# A verdict fires when its condition holds in at least PERSISTENCE_FRACTION of some window of
# PERSISTENCE_WINDOW consecutive recorded rows (so 20 rows in a row suffice, and so does an
# intermittent condition that holds every other step). A record shorter than the window needs
# the fraction of all its rows, and at least MIN_PERSISTENT_ROWS. Divergence and bad
# initialization are exempt: the first non-finite value, and the activations at step 0, are
# facts, not trends. Ours: one noisy batch must never decide a verdict.

# -- gradient flow through depth ---------------------------------------------------------------
VANISHING_RATIO = 1e-3
# ||dL/ds_first|| / ||dL/ds_output|| below this: the gradient reaching the first layer is a
# thousandth of the one leaving the loss. AUTOTRAINER (Zhang et al., ICSE 2021) uses 1e-3 (its
# beta_1) for the ratio of first- to last-layer gradient norms. We apply it to the backpropagated
# gradient (Glorot & Bengio 2010's measure), not to the weight gradients: in an MLP without
# normalization the weight gradient x_{i-1}^T dL/ds_i multiplies the forward activation scale by
# the backward gradient scale, which drift in opposite directions and cancel (measured: a
# 10-layer tanh net whose backprop signal fell 500x had weight-gradient ratio ~1; a ReLU net whose
# backprop signal grew 150x had weight-gradient ratio ~0.9). The weight-gradient ratio is
# reported as evidence.
EXPLODING_RATIO = 70.0
# The same ratio above this: AUTOTRAINER's beta_3 = 70. Healthy reference runs stay below 8.

# -- gradient flow through time (recurrent layers) ---------------------------------------------
VANISHING_TIME_RATIO = 1e-3
# ||dL/dh_first|| / ||dL/dh_T|| below this: the gradient reaching the first step of the sequence (of
# the truncated-BPTT window) is a thousandth of the one at the last step. AUTOTRAINER's beta_1
# (Zhang et al. 2021), the same first-to-last ratio, read along time instead of depth: the
# T - 1 steps of an unrolled network are its layers (Werbos 1990; Pascanu et al. 2013, sec. 2).
EXPLODING_TIME_RATIO = 70.0
# The same ratio above this: AUTOTRAINER's beta_3, along time. Measured ours: tanh rnns that learn
# the temporal order problem (normal recurrent init, radius 1) sit at 3-30 once trained.
GRADIENT_SPIKE_FACTOR = 10.0
# An exploding episode (Pascanu et al. 2013, sec. 3: "a sudden increase in the norm of the
# gradients", their Fig. 6 "cliffs"): a recorded step of a recurrent model whose global gradient
# norm exceeds this x the median of the PERSISTENCE_WINDOW rows before it, with the update not
# clipped. Ours: one decade. Measured: the unclipped tanh rnn of experiments/pascanu_temporal_order
# (T = 50) has 3 such steps in 12 epochs, each followed by the loss jumping 2-3x; the clipped arm has
# 4 in its pre-clip norms (clipping fired on all of them) and its loss does not move.
MIN_EXPLODING_EPISODES = 2
# ... and it takes this many unclipped episodes in a run for the verdict (one is an accident).
PASCANU_GAMMA_TANH = 1.0
PASCANU_GAMMA_SIGMOID = 0.25
# gamma bounds |phi'(x)| of the recurrent activation (tanh and relu: 1; sigmoid: 1/4). Pascanu et al.
# 2013, sec. 2.1: with the largest singular value of U below 1/gamma the gradient through time must
# vanish; above it is necessary (not sufficient) for it to explode. Reported against the rnn's U.
PASCANU_GAMMA = {"tanh": PASCANU_GAMMA_TANH, "relu": PASCANU_GAMMA_TANH, "sigmoid": PASCANU_GAMMA_SIGMOID}
RECOVERY_LOSS_FACTOR = 0.5
# A layer grew out of vanishing through time (an lstm whose forget gates open: Hochreiter &
# Schmidhuber 1997, Gers et al. 2000) when the ratio is no longer below VANISHING_TIME_RATIO in at
# least PERSISTENCE_FRACTION of the last PERSISTENCE_WINDOW rows AND the loss over those rows is at
# most this fraction of its median over the rows where it vanished; then the verdict is dropped.
# Ours: measured, the lstms of experiments/hochreiter_adding_lstm.toml escape the adding baseline
# (MSE 0.167 to < 0.005, a 30x fall) after a vanishing phase; a tanh rnn at chance on the temporal
# order problem at T = 100 drifts up to the threshold with its loss flat (ratio 1.0): still vanishing.
# The horizon's fraction (a tenth) is part of the statistic: workbench.monitor.statistics.HORIZON_FRACTION.

# -- units ------------------------------------------------------------------------------------
DEAD_FRACTION = 0.7
# Fraction of a ReLU layer's units that output 0 for every example of the batch. AUTOTRAINER's
# "dying ReLU" threshold gamma = 0.7 (there: the fraction of zero gradient entries). Healthy
# reference runs stay below 0.35 (diabetes), 0.55 for a 30-layer He-initialized net.
SATURATED_FRACTION = 0.75
# Fraction of a tanh/sigmoid layer's outputs in the flat tails (|tanh| > 0.97, sigmoid outside
# [0.03, 0.97]: slope below 6% of its maximum, see workbench.monitor.statistics). Glorot & Bengio
# 2010 (Fig. 2) show the top sigmoid layer of a standard-initialized net driven into saturation;
# they give no number. Ours: at 0.75 at most a quarter of the outputs still pass a useful
# gradient. Healthy reference runs stay below 0.45; normal(std 3-5) inits sit at 0.88-0.94.

# -- learning rate, from the size of the updates -----------------------------------------------
UPDATE_RATIO_TARGET = 1e-3
# ||W_{t+1} - W_t|| / ||W_t|| should be about 1e-3 (CS231n, Karpathy, "Neural Networks Part 3:
# ratio of weights:updates"); much lower learns too slowly, much higher is unstable. Suggested
# learning-rate factors bring the observed ratio back to this target (the update is proportional
# to the learning rate for SGD, momentum and Adam alike).
LR_HIGH_UPDATE_RATIO = 1e-2
# Median over layers of the update ratio above 10x the target ...
LR_HIGH_MIN_IMPROVEMENT = 0.0
# ... while the loss does not fall at all from the first to the second half of the trailing
# window (LOSS_WINDOW rows): flat, rising, or spiking (spikes lift the mean of the second half).
# Ours: a fast rate that still makes progress is not called sick. Measured: Adam's first steps on
# wide layers exceed 1e-2 in healthy runs while the loss falls fast; MAE regression on diabetes
# with Adam 1e-2 sits at 2e-2 for its first 100 steps while the loss falls 8% per window and ends
# well (a 10% bar called it sick); SGD at lr 1 on digits moves 5e-2 per step yet reaches 93%
# test accuracy in 4 seeds of 5, its loss falling 40% per window; Adam at 0.1 with leaky ReLU
# oscillates (windows from -60% to +50%) and ends near 80% accuracy: sick.
LR_LOW_UPDATE_RATIO = 1e-5
# Largest update ratio over layers below 100x under the target (even the fastest layer barely
# moves; with the max rather than the median, vanishing gradients do not read as a low rate) ...
LR_LOW_MAX_IMPROVEMENT = 0.05
# ... while the loss falls less than 5% across the trailing window (flat: the means of 20 batch
# losses wander by a few percent from noise alone; measured on a stalled run: +-3%) ...
LR_LOW_STILL_AT_START = 0.9
# ... and is still at least 90% of where it started (a converged run is also flat, but low) ...
LR_SCHEDULE_FLOOR = 0.5
# ... judged only on steps where the learning rate is at least half its peak (the spec's
# optimizer.lr, or the largest recorded): the end of a cosine schedule or a warmup is not a
# learning rate that is too low.
LOSS_WINDOW = PERSISTENCE_WINDOW
LOSS_MIN_ROWS = 10
# The trailing loss window of the learning-rate rules, and the fewest rows it is judged on.
INITIAL_LOSS_ROWS = 10
# The "starting loss" is the mean over the first rows.

# -- initialization: activation scale with depth at step 0 -------------------------------------
BAD_INIT_STD_RATIO_LOW = 0.1
BAD_INIT_STD_RATIO_HIGH = 10.0
# std of the last hidden layer's activations over the first's, at the first recorded step,
# outside [0.1, 10]: the initialization shrinks (or grows) the signal by a decade or more on its
# way through depth. Good initializations keep the variance constant across layers (Glorot &
# Bengio 2010, Sec. 4.2; He et al. 2015, Sec. 2.2), which puts healthy nets near 1 (reference
# runs: 0.52-1.11); ours: one decade of drift. A hidden layer whose activations are constant
# (std 0, e.g. zeros init) is flagged too. Needs 2+ hidden layers.
BAD_INIT_LAYER_FACTOR = 1.25
# ... and only when the drift is systematic: the geometric mean factor per layer, ratio^(1/depth),
# is off 1 by more than this (below 0.8 or above 1.25). A mis-scaled initializer multiplies the
# std by the same factor at every layer (Xavier under ReLU: 1/sqrt(2) = 0.71; He et al. 2015,
# Fig. 3, where such a 30-layer net stalls). A product of many random layers also drifts by
# chance: at width 32 and depth 30 He initialization ends a decade low in 1 seed of 10 (finite-
# width fluctuations, Hanin & Rolnick 2018), but its per-layer factor stays within 0.9-1.1.

# -- advice ----------------------------------------------------------------------------------------
CLIP_QUANTILE = 0.5
# Suggested clipping.max_norm: the median global gradient norm of the healthy phase (rows where no
# gradient finding holds, before any divergence). Pascanu, Mikolov & Bengio 2013 (Sec. 3.2):
# "a good heuristic for setting this threshold is to look at statistics on the average norm over a
# sufficiently large number of updates". The 90th percentile is reported beside it.
CLIP_QUANTILE_HIGH = 0.9
LR_DIVERGENCE_FACTOR = 10.0
# After a divergence with no lr-specific evidence, suggest dividing the learning rate by 10 (one
# decade, the step of a coarse learning-rate search; CS231n, "Hyperparameter optimization").


@dataclass(frozen=True)
class Threshold:
    name: str
    value: float
    source: str


VARIANCE_PRESERVATION = "ours; variance preservation (Glorot & Bengio 2010, He et al. 2015)"
TABLE: tuple[Threshold, ...] = (
    Threshold("PERSISTENCE_WINDOW", PERSISTENCE_WINDOW, "ours: rows; a verdict holds in >= half of a window"),
    Threshold("PERSISTENCE_FRACTION", PERSISTENCE_FRACTION, "ours"),
    Threshold("MIN_PERSISTENT_ROWS", MIN_PERSISTENT_ROWS, "ours: short records"),
    Threshold("VANISHING_RATIO", VANISHING_RATIO, "AUTOTRAINER beta_1 (Zhang et al. 2021), on backprop norms"),
    Threshold("EXPLODING_RATIO", EXPLODING_RATIO, "AUTOTRAINER beta_3 (Zhang et al. 2021), on backprop norms"),
    Threshold("VANISHING_TIME_RATIO", VANISHING_TIME_RATIO, "AUTOTRAINER beta_1 (Zhang et al. 2021), along time"),
    Threshold("EXPLODING_TIME_RATIO", EXPLODING_TIME_RATIO, "AUTOTRAINER beta_3 (Zhang et al. 2021), along time"),
    Threshold("GRADIENT_SPIKE_FACTOR", GRADIENT_SPIKE_FACTOR, "ours: one decade over the trailing median norm "
              "(Pascanu et al. 2013, sec. 3)"),
    Threshold("MIN_EXPLODING_EPISODES", MIN_EXPLODING_EPISODES, "ours: unclipped episodes before the verdict"),
    Threshold("PASCANU_GAMMA_TANH", PASCANU_GAMMA_TANH, "Pascanu, Mikolov & Bengio 2013, sec. 2.1: max |tanh'|"),
    Threshold("PASCANU_GAMMA_SIGMOID", PASCANU_GAMMA_SIGMOID, "Pascanu, Mikolov & Bengio 2013, sec. 2.1: max |sigmoid'|"),
    Threshold("RECOVERY_LOSS_FACTOR", RECOVERY_LOSS_FACTOR, "ours: the loss halves after the gradient recovers"),
    Threshold("DEAD_FRACTION", DEAD_FRACTION, "AUTOTRAINER gamma (dying ReLU)"),
    Threshold("SATURATED_FRACTION", SATURATED_FRACTION, "ours; Glorot & Bengio 2010 Fig. 2"),
    Threshold("UPDATE_RATIO_TARGET", UPDATE_RATIO_TARGET, "CS231n (Karpathy): updates/weights ~ 1e-3"),
    Threshold("LR_HIGH_UPDATE_RATIO", LR_HIGH_UPDATE_RATIO, "10x the CS231n target"),
    Threshold("LR_HIGH_MIN_IMPROVEMENT", LR_HIGH_MIN_IMPROVEMENT, "ours: the loss must fall at all across a window"),
    Threshold("LR_LOW_UPDATE_RATIO", LR_LOW_UPDATE_RATIO, "100x below the CS231n target"),
    Threshold("LR_LOW_MAX_IMPROVEMENT", LR_LOW_MAX_IMPROVEMENT, "ours: flat loss, < 5% per window (batch noise ~3%)"),
    Threshold("LR_LOW_STILL_AT_START", LR_LOW_STILL_AT_START, "ours: loss still >= 90% of its start"),
    Threshold("LR_SCHEDULE_FLOOR", LR_SCHEDULE_FLOOR, "ours: schedule tails are not judged"),
    Threshold("LOSS_WINDOW", LOSS_WINDOW, "ours: rows"),
    Threshold("LOSS_MIN_ROWS", LOSS_MIN_ROWS, "ours: rows"),
    Threshold("INITIAL_LOSS_ROWS", INITIAL_LOSS_ROWS, "ours: rows"),
    Threshold("BAD_INIT_STD_RATIO_LOW", BAD_INIT_STD_RATIO_LOW, VARIANCE_PRESERVATION),
    Threshold("BAD_INIT_STD_RATIO_HIGH", BAD_INIT_STD_RATIO_HIGH, VARIANCE_PRESERVATION),
    Threshold("BAD_INIT_LAYER_FACTOR", BAD_INIT_LAYER_FACTOR, "ours; He et al. 2015 Fig. 3, Hanin & Rolnick 2018"),
    Threshold("CLIP_QUANTILE", CLIP_QUANTILE, "Pascanu, Mikolov & Bengio 2013: average norm"),
    Threshold("CLIP_QUANTILE_HIGH", CLIP_QUANTILE_HIGH, "reported beside it"),
    Threshold("LR_DIVERGENCE_FACTOR", LR_DIVERGENCE_FACTOR, "one decade (CS231n coarse search)"),
)
