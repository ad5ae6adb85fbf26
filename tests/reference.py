"""An independent NumPy reference of the four gate equations.

Written from the equations in DEVELOPERS.md, in float64, one step at a time,
with the weights under their equation names (`W_n`, `W_i`, ... acting on the
concatenation `[STM_{t-1}, E_t]`). It shares no code with the package.
"""

import numpy as np


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def four_gate_lstm(x, w, use_gate, stm=None, ltm=None):
    """Runs the four gates over `x` (batch, time, features).

    Returns a dict of (batch, time, units) arrays: N, i, f, LTM, U, V, STM.
    """
    x = np.asarray(x, np.float64)
    w = {k: np.asarray(v, np.float64) for k, v in w.items()}
    batch, time, _ = x.shape
    units = w["W_f"].shape[1]
    stm = np.zeros((batch, units)) if stm is None else np.asarray(stm, np.float64)
    ltm = np.zeros((batch, units)) if ltm is None else np.asarray(ltm, np.float64)
    trace = {k: [] for k in ("N", "i", "f", "LTM", "U", "V", "STM")}
    for t in range(time):
        stm_e = np.concatenate([stm, x[:, t]], axis=1)
        # Learn gate.
        n = np.tanh(stm_e @ w["W_n"] + w["b_n"])
        i = sigmoid(stm_e @ w["W_i"] + w["b_i"])
        # Forget gate.
        f = sigmoid(stm_e @ w["W_f"] + w["b_f"])
        forget_out = ltm * f
        # Remember gate.
        new_ltm = forget_out + n * i
        # Use gate.
        if use_gate == "projected":
            u = np.tanh(forget_out @ w["W_u"] + w["b_u"])
        else:
            u = np.tanh(new_ltm)
        v = sigmoid(stm_e @ w["W_v"] + w["b_v"])
        stm, ltm = u * v, new_ltm
        for key, value in zip(trace, (n, i, f, ltm, u, v, stm)):
            trace[key].append(value)
    return {k: np.stack(v, axis=1) for k, v in trace.items()}


def random_gate_weights(units, input_dim, use_gate, rng, scale=0.5):
    """Random weights under the equation names, for `set_gate_weights`."""
    w = {}
    for gate in ("n", "i", "f", "v"):
        w[f"W_{gate}"] = rng.normal(0, scale, (units + input_dim, units))
        w[f"b_{gate}"] = rng.normal(0, scale, (units,))
    if use_gate == "projected":
        w["W_u"] = rng.normal(0, scale, (units, units))
        w["b_u"] = rng.normal(0, scale, (units,))
    return w
