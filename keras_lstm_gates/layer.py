"""`FourGateLSTM`: the four-gate LSTM over a whole sequence."""

import keras
from keras import activations
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers
from keras import tree

from keras_lstm_gates import _checks
from keras_lstm_gates.cell import FourGateLSTMCell


@keras.saving.register_keras_serializable(package="keras_lstm_gates")
class FourGateLSTM(keras.layers.RNN):
    """The four-gate LSTM layer: Learn, Forget, Remember and Use gates.

    Runs a `FourGateLSTMCell` over a sequence, as `keras.layers.LSTM` runs
    `keras.layers.LSTMCell`; see the cell for the equations and the weights.
    On the TensorFlow backend the layer runs a fused whole-sequence loop:
    with a hand-written backward pass when training (faster than autodiff
    through the cell's loop), compiled with XLA for inference where the
    shapes are static; `unroll=True`, custom activations and the other
    backends run the cell step by step in Keras's loop. Its results equal
    `keras.layers.RNN(FourGateLSTMCell(...))` with the same weights. Under a
    `mixed_bfloat16` policy the fused loop keeps the state in float32 and
    runs only its matmuls in bfloat16 (where the CPU has bfloat16 matrix
    units, or on a GPU).

    Args:
        units: Positive int, the size of `STM` and `LTM`.
        use_gate: `"projected"` (default) or `"classic"`; see
            `FourGateLSTMCell`.
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
            whatever `bias_initializer` gives the other gates, as in
            `keras.layers.LSTM`. Default: `True`.
        kernel_regularizer: Regularizer for `kernel` and `use_gate_kernel`.
            Default: `None`.
        recurrent_regularizer: Regularizer for `recurrent_kernel`.
            Default: `None`.
        bias_regularizer: Regularizer for the biases. Default: `None`.
        activity_regularizer: Regularizer for the layer's output.
            Default: `None`.
        kernel_constraint: Constraint for `kernel` and `use_gate_kernel`.
            Default: `None`.
        recurrent_constraint: Constraint for `recurrent_kernel`.
            Default: `None`.
        bias_constraint: Constraint for the biases. Default: `None`.
        dropout: Float in [0, 1): fraction of the input units to drop while
            training. Default: 0.
        recurrent_dropout: Float in [0, 1): fraction of `STM_{t-1}` to drop
            while training. Default: 0.
        seed: Random seed for dropout. Default: `None`.
        return_sequences: Whether to return `STM` at every step, or only the
            last. Default: `False`.
        return_state: Whether to also return the last `STM` and `LTM`.
            Default: `False`.
        go_backwards: If `True`, read the sequence backwards and return the
            reversed sequence. Default: `False`.
        stateful: If `True`, the last state of each sample in a batch is the
            initial state of the same sample in the next batch. Default:
            `False`.
        unroll: If `True`, unroll the loop (faster for short sequences, more
            memory). Default: `False`.
        **kwargs: Standard layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: A tensor of shape `(batch, time, features)`.
        mask: Optional boolean tensor `(batch, time)`: `False` steps are
            skipped (the state carries over).
        training: Python boolean, whether dropout applies.
        initial_state: Optional list `[STM_0, LTM_0]`, each `(batch, units)`.

    Returns:
        `STM_T`, `(batch, units)`, or with `return_sequences` every `STM_t`,
        `(batch, time, units)`; with `return_state`, followed by the final
        `STM` and `LTM`.

    Example:

    >>> import keras, numpy as np
    >>> from keras_lstm_gates import FourGateLSTM
    >>> model = keras.Sequential([
    ...     keras.Input((10, 3)), FourGateLSTM(16), keras.layers.Dense(1)])
    >>> model.compile("adam", "mse")
    >>> model.predict(np.zeros((4, 10, 3), "float32"), verbose=0).shape
    (4, 1)
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
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        **kwargs,
    ):
        cell = FourGateLSTMCell(
            units,
            use_gate=use_gate,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            use_gate_initializer=use_gate_initializer,
            bias_initializer=bias_initializer,
            unit_forget_bias=unit_forget_bias,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name="four_gate_lstm_cell",
        )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )

    def build(self, sequences_shape, initial_state_shape=None):
        _checks.check_sequence_shape(self.name, sequences_shape)
        super().build(sequences_shape, initial_state_shape)

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if tree.is_nested(mask):
            mask = mask[0]
        cell = self.cell
        if keras.backend.backend() == "tensorflow":
            from keras_lstm_gates._fused import internals
            from keras_lstm_gates._fused import run

            if run.supports(cell, self.unroll, training):
                # One loop over the sequence; with a hand-written backward
                # pass when training, compiled with XLA for inference.
                if training and cell.dropout > 0:
                    dropout_mask = cell.get_dropout_mask(sequences[:, 0, :])
                    sequences = sequences * ops.expand_dims(dropout_mask, 1)
                return run.run(
                    sequences,
                    initial_state,
                    *internals.stored_values(
                        cell.kernel,
                        cell.bias,
                        cell.recurrent_kernel,
                        cell.use_gate_kernel,
                        cell.use_gate_bias,
                    ),
                    mask=mask,
                    go_backwards=self.go_backwards,
                    zero_output_for_mask=self.zero_output_for_mask,
                    return_all_outputs=self.return_sequences,
                    training=bool(training),
                )
        # Keras's own loop, the cell one step at a time (the events'
        # projection stays in the step: see docs/performance.md).
        return super().inner_loop(sequences, initial_state, mask, training)

    def call(self, sequences, initial_state=None, mask=None, training=False):
        _checks.check_sequence_shape(
            self.name, sequences.shape, self.cell.kernel.shape[0]
        )
        _checks.check_mask(
            self.name, mask[0] if tree.is_nested(mask) else mask, sequences.shape
        )
        _checks.check_initial_state(
            self.name, initial_state, sequences.shape[0], self.units
        )
        if not keras.backend.is_float_dtype(sequences.dtype):
            # Integer events, as `keras.layers.LSTM` takes them.
            sequences = ops.cast(sequences, self.compute_dtype)
        return super().call(
            sequences, initial_state=initial_state, mask=mask, training=training
        )

    @property
    def units(self):
        """The cell's `units` (read-only)."""
        return self.cell.units

    @property
    def use_gate(self):
        """The cell's `use_gate` (read-only)."""
        return self.cell.use_gate

    @property
    def activation(self):
        """The cell's `activation` (read-only)."""
        return self.cell.activation

    @property
    def recurrent_activation(self):
        """The cell's `recurrent_activation` (read-only)."""
        return self.cell.recurrent_activation

    @property
    def use_bias(self):
        """The cell's `use_bias` (read-only)."""
        return self.cell.use_bias

    @property
    def kernel_initializer(self):
        """The cell's `kernel_initializer` (read-only)."""
        return self.cell.kernel_initializer

    @property
    def recurrent_initializer(self):
        """The cell's `recurrent_initializer` (read-only)."""
        return self.cell.recurrent_initializer

    @property
    def use_gate_initializer(self):
        """The cell's `use_gate_initializer` (read-only)."""
        return self.cell.use_gate_initializer

    @property
    def bias_initializer(self):
        """The cell's `bias_initializer` (read-only)."""
        return self.cell.bias_initializer

    @property
    def unit_forget_bias(self):
        """The cell's `unit_forget_bias` (read-only)."""
        return self.cell.unit_forget_bias

    @property
    def kernel_regularizer(self):
        """The cell's `kernel_regularizer` (read-only)."""
        return self.cell.kernel_regularizer

    @property
    def recurrent_regularizer(self):
        """The cell's `recurrent_regularizer` (read-only)."""
        return self.cell.recurrent_regularizer

    @property
    def bias_regularizer(self):
        """The cell's `bias_regularizer` (read-only)."""
        return self.cell.bias_regularizer

    @property
    def kernel_constraint(self):
        """The cell's `kernel_constraint` (read-only)."""
        return self.cell.kernel_constraint

    @property
    def recurrent_constraint(self):
        """The cell's `recurrent_constraint` (read-only)."""
        return self.cell.recurrent_constraint

    @property
    def bias_constraint(self):
        """The cell's `bias_constraint` (read-only)."""
        return self.cell.bias_constraint

    @property
    def dropout(self):
        """The cell's `dropout` (read-only)."""
        return self.cell.dropout

    @property
    def recurrent_dropout(self):
        """The cell's `recurrent_dropout` (read-only)."""
        return self.cell.recurrent_dropout

    @property
    def seed(self):
        """The cell's dropout `seed` (read-only)."""
        return self.cell.seed

    def gate_weights(self):
        """The cell's weights under their equation names; see the cell."""
        return self.cell.gate_weights()

    def set_gate_weights(self, weights):
        """Sets the cell's weights from equation names; see the cell."""
        self.cell.set_gate_weights(weights)

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
            "activity_regularizer": regularizers.serialize(self.activity_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": constraints.serialize(self.recurrent_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
        }
        base_config = super().get_config()
        del base_config["cell"]
        return {**base_config, **config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
