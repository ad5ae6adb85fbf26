"""`FourGateLSTMCell`: one step of the four-gate LSTM."""

import collections

import keras
import numpy as np
from keras import activations
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers

# Keras exports no public name for the dropout-mask mixin of its own cells;
# `keras.layers.RNN` recognises it by type to prepare the masks before the loop.
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

from keras_lstm_gates import _checks

# The order of the gates in the fused kernels: Keras's LSTMCell order
# (i, f, c, o), so that a `classic` cell takes a `keras.layers.LSTM`'s weights.
GATE_ORDER = ("i", "f", "n", "v")

GateActivations = collections.namedtuple(
    "GateActivations", ["N", "i", "f", "LTM", "U", "V", "STM"]
)
GateActivations.__doc__ = """Every activation of one step of the cell.

Each field is a tensor of shape `(batch, units)`: the Learn gate's candidate
`N` and input gate `i`, the forget gate `f`, the new long-term memory `LTM`,
the Use gate's `U` and `V`, and the new short-term memory `STM` (the output).
"""


@keras.saving.register_keras_serializable(package="keras_lstm_gates")
class FourGateLSTMCell(keras.layers.Layer, DropoutRNNCell):
    """Cell of the four-gate LSTM: Learn, Forget, Remember and Use gates.

    The cell carries a long-term memory `LTM` and a short-term memory `STM`
    and reads one event `E_t` per step. With `[STM, E]` the concatenation,
    `σ` the recurrent activation (sigmoid) and `tanh` the activation:

    ```
    Learn:    N_t   = tanh(W_n [STM_{t-1}, E_t] + b_n)
              i_t   = σ(W_i [STM_{t-1}, E_t] + b_i)        -> N_t * i_t
    Forget:   f_t   = σ(W_f [STM_{t-1}, E_t] + b_f)        -> LTM_{t-1} * f_t
    Remember: LTM_t = LTM_{t-1} * f_t + N_t * i_t
    Use:      V_t   = σ(W_v [STM_{t-1}, E_t] + b_v)
              U_t   = tanh(W_u (LTM_{t-1} * f_t) + b_u)     (use_gate="projected")
              U_t   = tanh(LTM_t)                           (use_gate="classic")
              STM_t = U_t * V_t
    ```

    `STM_t` is the cell's output. The state is `[STM, LTM]`, in the order of
    Keras's `[h, c]`.

    The weights are fused as in `keras.layers.LSTMCell`, gates in the order
    `i, f, N, V` (Keras's `i, f, c, o`), so one matmul computes all four gates:

    - `kernel`, shape `(input_dim, 4 * units)`: the rows of `W_*` acting on `E_t`.
    - `recurrent_kernel`, shape `(units, 4 * units)`: the rows acting on
      `STM_{t-1}`. Columns `[0:u]` are gate `i`, `[u:2u]` `f`, `[2u:3u]` `N`
      and `[3u:4u]` `V`.
    - `bias`, shape `(4 * units,)`, in the same order.
    - `use_gate_kernel` `W_u`, shape `(units, units)`, and `use_gate_bias`
      `b_u`, shape `(units,)`: only with `use_gate="projected"`.

    A `classic` cell is therefore weight-compatible with `keras.layers.LSTM`:
    its `set_weights` takes an LSTM's weights unchanged and gives the same
    outputs. `gate_weights()` shows the weights under their equation names.

    Args:
        units: Positive int, the size of `STM` and `LTM`.
        use_gate: `"projected"` (default): the Use gate projects the Forget
            gate's output, `U_t = tanh(W_u (LTM_{t-1} * f_t) + b_u)`.
            `"classic"`: the textbook LSTM, `U_t = tanh(LTM_t)`.
        activation: Activation of `N_t` and `U_t`. Default: `"tanh"`.
        recurrent_activation: Activation of `i_t`, `f_t` and `V_t`.
            Default: `"sigmoid"`.
        use_bias: Whether the gates have biases. Default: `True`.
        kernel_initializer: Initializer for `kernel`. Default:
            `"glorot_uniform"`.
        recurrent_initializer: Initializer for `recurrent_kernel`. Default:
            `"orthogonal"`.
        use_gate_initializer: Initializer for `use_gate_kernel`. Default:
            `"glorot_uniform"`.
        bias_initializer: Initializer for the biases. Default: `"zeros"`.
        unit_forget_bias: If `True`, the forget gate's bias starts at 1
            whatever `bias_initializer` gives the other gates (Jozefowicz et
            al., 2015), as in `keras.layers.LSTM`. Default: `True`.
        kernel_regularizer: Regularizer for `kernel` and `use_gate_kernel`.
            Default: `None`.
        recurrent_regularizer: Regularizer for `recurrent_kernel`.
            Default: `None`.
        bias_regularizer: Regularizer for the biases. Default: `None`.
        kernel_constraint: Constraint for `kernel` and `use_gate_kernel`.
            Default: `None`.
        recurrent_constraint: Constraint for `recurrent_kernel`.
            Default: `None`.
        bias_constraint: Constraint for the biases. Default: `None`.
        dropout: Float in [0, 1): fraction of the input units to drop while
            training. Default: 0.
        recurrent_dropout: Float in [0, 1): fraction of `STM_{t-1}` units to
            drop in the gates' input while training. Default: 0.
        seed: Random seed for dropout. Default: `None`.
        **kwargs: Standard layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: A tensor of shape `(batch, input_dim)`: the event `E_t`.
        states: A list `[STM_{t-1}, LTM_{t-1}]`, each `(batch, units)`.
        training: Python boolean, whether dropout applies.

    Returns:
        `(STM_t, [STM_t, LTM_t])`.

    Example:

    >>> import keras, numpy as np
    >>> from keras_lstm_gates import FourGateLSTMCell
    >>> layer = keras.layers.RNN(FourGateLSTMCell(8))
    >>> tuple(layer(np.zeros((2, 5, 3), "float32")).shape)
    (2, 8)
    """

    def __init__(
        self,
        units,
        use_gate="projected",
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        use_gate_initializer="glorot_uniform",
        bias_initializer="zeros",
        unit_forget_bias=True,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = _checks.check_units(units)
        self.use_gate = _checks.check_use_gate(use_gate)
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.use_bias = bool(use_bias)

        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.use_gate_initializer = initializers.get(use_gate_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.unit_forget_bias = bool(unit_forget_bias)

        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

        self.kernel_constraint = constraints.get(kernel_constraint)
        self.recurrent_constraint = constraints.get(recurrent_constraint)
        self.bias_constraint = constraints.get(bias_constraint)

        self.dropout = _checks.check_rate("dropout", dropout)
        self.recurrent_dropout = _checks.check_rate(
            "recurrent_dropout", recurrent_dropout
        )
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)

        self.state_size = [self.units, self.units]
        self.output_size = self.units

    @property
    def projected(self):
        """Whether the Use gate has its own projection `W_u`."""
        return self.use_gate == "projected"

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"Cell '{self.name}': the feature size of the inputs must be "
                f"known to build the cell, got input shape {input_shape}"
            )
        self.kernel = self.add_weight(
            shape=(input_dim, 4 * self.units),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, 4 * self.units),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(4 * self.units,),
                name="bias",
                initializer=self._fused_bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        self.use_gate_kernel = None
        self.use_gate_bias = None
        if self.projected:
            self.use_gate_kernel = self.add_weight(
                shape=(self.units, self.units),
                name="use_gate_kernel",
                initializer=self.use_gate_initializer,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )
            if self.use_bias:
                self.use_gate_bias = self.add_weight(
                    shape=(self.units,),
                    name="use_gate_bias",
                    initializer=self.bias_initializer,
                    regularizer=self.bias_regularizer,
                    constraint=self.bias_constraint,
                )
        self.built = True

    def _fused_bias_initializer(self, shape, dtype=None):
        """The gates' bias, with the forget gate's block at 1 if asked."""
        if not self.unit_forget_bias:
            return self.bias_initializer(shape, dtype=dtype)
        units = self.units
        return ops.concatenate(
            [
                self.bias_initializer((units,), dtype=dtype),
                initializers.Ones()((units,), dtype=dtype),
                self.bias_initializer((2 * units,), dtype=dtype),
            ]
        )

    def pre_activations(self, inputs, stm_prev):
        """`W [STM_{t-1}, E_t] + b` for all four gates at once.

        Args:
            inputs: `E_t`, `(batch, input_dim)`.
            stm_prev: `STM_{t-1}`, `(batch, units)`.

        Returns:
            The fused pre-activations, `(batch, 4 * units)`, in the order
            `i, f, N, V`.
        """
        z = ops.matmul(inputs, self.kernel)
        z = z + ops.matmul(stm_prev, self.recurrent_kernel)
        if self.use_bias:
            z = z + self.bias
        return z

    def gates(self, z, ltm_prev):
        """Applies the four gates to the fused pre-activations.

        Args:
            z: `W [STM_{t-1}, E_t] + b` for all four gates, `(batch, 4*units)`,
                in the order `i, f, N, V`.
            ltm_prev: `LTM_{t-1}`, `(batch, units)`.

        Returns:
            A `GateActivations` of the step.
        """
        z_i, z_f, z_n, z_v = ops.split(z, 4, axis=-1)

        # Learn gate: what of the new event to learn.
        n = self.activation(z_n)
        i = self.recurrent_activation(z_i)
        learned = n * i

        # Forget gate: what of the long-term memory to keep.
        f = self.recurrent_activation(z_f)
        kept = ltm_prev * f

        # Remember gate: the new long-term memory.
        ltm = kept + learned

        # Use gate: the new short-term memory, which is the output.
        v = self.recurrent_activation(z_v)
        if self.projected:
            u = ops.matmul(kept, self.use_gate_kernel)
            if self.use_bias:
                u = u + self.use_gate_bias
            u = self.activation(u)
        else:
            u = self.activation(ltm)
        stm = u * v

        return GateActivations(N=n, i=i, f=f, LTM=ltm, U=u, V=v, STM=stm)

    def call(self, inputs, states, training=False):
        _checks.check_step(
            self.name, inputs.shape, states, self.units, self.kernel.shape[0]
        )
        stm_prev, ltm_prev = states
        if training and self.dropout > 0:
            inputs = inputs * self.get_dropout_mask(inputs)
        if training and self.recurrent_dropout > 0:
            stm_prev = stm_prev * self.get_recurrent_dropout_mask(stm_prev)
        step = self.gates(self.pre_activations(inputs, stm_prev), ltm_prev)
        return step.STM, [step.STM, step.LTM]

    def get_initial_state(self, batch_size=None):
        return [
            ops.zeros((batch_size, self.units), dtype=self.compute_dtype)
            for _ in self.state_size
        ]

    def gate_weights(self):
        """The weights under the names of the equations, as NumPy arrays.

        Returns:
            A dict with `W_n`, `W_i`, `W_f`, `W_v`, each of shape
            `(units + input_dim, units)` acting on `[STM_{t-1}, E_t]` (the
            first `units` rows multiply `STM`); with `use_bias`, `b_n`, `b_i`,
            `b_f`, `b_v` of shape `(units,)`; and for `use_gate="projected"`,
            `W_u` `(units, units)` and, with `use_bias`, `b_u` `(units,)`.
        """
        self._check_built("gate_weights")
        kernel = np.concatenate(
            [
                keras.ops.convert_to_numpy(self.recurrent_kernel),
                keras.ops.convert_to_numpy(self.kernel),
            ]
        )
        blocks = np.split(kernel, 4, axis=1)
        weights = {f"W_{g}": w for g, w in zip(GATE_ORDER, blocks)}
        if self.use_bias:
            biases = np.split(keras.ops.convert_to_numpy(self.bias), 4)
            weights.update({f"b_{g}": b for g, b in zip(GATE_ORDER, biases)})
        if self.projected:
            weights["W_u"] = keras.ops.convert_to_numpy(self.use_gate_kernel)
            if self.use_bias:
                weights["b_u"] = keras.ops.convert_to_numpy(self.use_gate_bias)
        return weights

    def set_gate_weights(self, weights):
        """Sets the weights from a dict shaped like `gate_weights()`.

        Args:
            weights: A dict with the keys and shapes `gate_weights()` returns.

        Raises:
            ValueError: if a key is missing or unknown (a bias of a cell
                without biases, `W_u` of a classic cell), or an array has
                the wrong shape.
        """
        self._check_built("set_gate_weights")
        expected = self.gate_weights()
        unknown = sorted(set(weights) - set(expected))
        if unknown:
            raise ValueError(
                f"set_gate_weights: unknown keys {unknown} for this cell "
                f"(use_gate={self.use_gate!r}, use_bias={self.use_bias}); "
                f"expected the keys {sorted(expected)}"
            )
        arrays = {}
        for key, current in expected.items():
            if key not in weights:
                raise ValueError(
                    f"set_gate_weights: missing key '{key}' "
                    f"(expected shape {current.shape})"
                )
            value = np.asarray(weights[key], dtype=current.dtype)
            if value.shape != current.shape:
                raise ValueError(
                    f"set_gate_weights: '{key}' must have shape "
                    f"{current.shape}, got {value.shape}"
                )
            arrays[key] = value
        kernel = np.concatenate([arrays[f"W_{g}"] for g in GATE_ORDER], axis=1)
        self.recurrent_kernel.assign(kernel[: self.units])
        self.kernel.assign(kernel[self.units :])
        if self.use_bias:
            self.bias.assign(np.concatenate([arrays[f"b_{g}"] for g in GATE_ORDER]))
        if self.projected:
            self.use_gate_kernel.assign(arrays["W_u"])
            if self.use_bias:
                self.use_gate_bias.assign(arrays["b_u"])

    def _check_built(self, what):
        if not self.built:
            raise ValueError(
                f"Cell '{self.name}': {what}() needs a built cell; call the "
                "layer on inputs (or build it) first"
            )

    def get_config(self):
        config = {
            "units": self.units,
            "use_gate": self.use_gate,
            "activation": activations.serialize(self.activation),
            "recurrent_activation": activations.serialize(self.recurrent_activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
            "use_gate_initializer": initializers.serialize(self.use_gate_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "unit_forget_bias": self.unit_forget_bias,
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": constraints.serialize(self.recurrent_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}
