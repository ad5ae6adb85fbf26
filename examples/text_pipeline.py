"""The text pipeline shared by the sentiment and topic examples.

Reading a labelled CSV, a stratified seeded split, tokenisation with
`tensorflow-text`, a vocabulary fitted on the training split, the evaluation
against the majority class with per-class metrics, the test text the gates
are shown on and its tokens, and the SavedModel that takes raw strings. The
models themselves are in the examples.
"""

import collections
import os
import re
import textwrap
from pathlib import Path

import common
import keras
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

# Token ids: 0 pads (and is masked), 1 is a token not in the vocabulary.
PAD, OOV = "[PAD]", "[UNK]"
# The rows each class of a `--csv` needs, so that its 70/10/20 split puts at
# least one in every part (10 % of 6 rows rounds to 1, of 5 rows to 0).
MIN_ROWS_PER_CLASS = 6


def read_labelled_csv(path, text_column="text", label_column="label"):
    """Reads `(texts, labels)` from a CSV, checking the file and columns.

    Args:
        path: The CSV file.
        text_column: The column of texts.
        label_column: The column of class labels (strings or numbers).

    Returns:
        Two NumPy arrays: the texts (`str`) and the labels as strings,
        stripped of surrounding spaces; rows with an empty label are left
        out.
    """
    path = Path(path)
    frame = common.read_csv(path, dtype=str, keep_default_na=False)
    for flag, column in (
        ("--text-column", text_column),
        ("--label-column", label_column),
    ):
        if column not in frame.columns:
            raise ValueError(
                f"{flag}: {path} has no column {column!r}; its columns are "
                f"{list(frame.columns)}"
            )
    # "World " is the class "World": spaces around a label are not part of it.
    labels = frame[label_column].str.strip()
    keep = labels != ""
    return frame[text_column][keep].to_numpy(str), labels[keep].to_numpy(str)


def encode_labels(labels, *, exactly=None):
    """Maps labels to ints `0..n-1` in sorted order of the class names.

    Integer labels sort as numbers (`"2"` before `"10"`), so that output `k`
    of the model is label `k` for labels `0..n-1`; others sort as text.

    Args:
        labels: Array of class names.
        exactly: If given, the number of classes the task needs.

    Returns:
        `(ids, classes)`: int32 ids and the sorted class names.
    """
    classes, ids = np.unique(labels, return_inverse=True)
    if all(re.fullmatch(r"[+-]?\d+", str(c)) for c in classes):
        order = np.argsort([int(c) for c in classes], kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        classes, ids = classes[order], rank[ids]
    if len(classes) < 2:
        raise ValueError(
            f"the label column must hold at least 2 classes, got {len(classes)}: "
            f"{[str(c) for c in classes]}"
        )
    if exactly is not None and len(classes) != exactly:
        raise ValueError(
            f"the label column must hold exactly {exactly} classes, got "
            f"{len(classes)}: {[str(c) for c in classes[:10]]}"
        )
    return ids.astype("int32"), [str(c) for c in classes]


def stratified_split(labels, fractions, seed):
    """Splits indices into parts of the given fractions, class by class.

    Args:
        labels: Int class ids.
        fractions: Fractions of the parts after the first, e.g. `(0.1, 0.2)`
            for 70 % / 10 % / 20 %.
        seed: Seed of the shuffle.

    Returns:
        A list of sorted index arrays, one per part (first the remainder).
    """
    rng = np.random.default_rng(seed)
    parts = [[] for _ in range(len(fractions) + 1)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        counts = [int(round(f * len(members))) for f in fractions]
        start = 0
        for part, count in zip(parts[1:], counts):
            part.extend(members[start : start + count])
            start += count
        parts[0].extend(members[start:])
    return [np.sort(np.array(part, dtype="int64")) for part in parts]


def stratified_sample(labels, size, seed):
    """Sorted indices of about `size` samples, the classes in proportion."""
    if size >= len(labels):
        return np.arange(len(labels))
    _, sample = stratified_split(labels, (size / len(labels),), seed)
    return sample


class TextVectorizer:
    """Strings to fixed-length int32 token ids, in the TensorFlow graph.

    Normalises with Unicode NFKC and case folding (`tensorflow-text`), splits
    with `UnicodeScriptTokenizer` (words and punctuation apart), looks tokens
    up in the vocabulary (0 pads, 1 is unknown), cuts or pads to
    `sequence_length`.

    Args:
        vocabulary: The tokens, most frequent first, without `[PAD]`/`[UNK]`.
        sequence_length: The number of token ids per text.
    """

    def __init__(self, vocabulary, sequence_length):
        self.vocabulary = list(vocabulary)
        self.sequence_length = int(sequence_length)
        self.lookup = keras.layers.StringLookup(
            vocabulary=self.vocabulary, mask_token="", num_oov_indices=1
        )

    @property
    def vocabulary_size(self):
        """The number of token ids, `[PAD]` and `[UNK]` included."""
        return len(self.vocabulary) + 2

    @classmethod
    def adapt(
        cls, texts, max_tokens, sequence_length=None, min_count=2, batch_size=1024
    ):
        """Builds a vectorizer from the training texts only.

        Args:
            texts: The training texts.
            max_tokens: Keep at most this many ids, `[PAD]`/`[UNK]` included.
            sequence_length: Ids per text; `None` takes the 95th percentile
                of the training texts' lengths (at least 8, at most 256).
            min_count: Keep only tokens seen at least this often; rarer ones
                become `[UNK]` (a token seen once teaches nothing general).
            batch_size: Texts tokenised at once.

        Returns:
            A `TextVectorizer`.
        """
        counts = collections.Counter()
        lengths = []
        for start in range(0, len(texts), batch_size):
            tokens = tokenize(tf.constant(texts[start : start + batch_size]))
            lengths.extend(tokens.row_lengths().numpy().tolist())
            counts.update(t.decode("utf-8") for t in tokens.flat_values.numpy())
        counts.pop("", None)
        vocabulary = [
            t for t, n in counts.most_common(max_tokens - 2) if n >= min_count
        ]
        if not vocabulary:
            raise ValueError(
                f"--text-column: the {len(texts)} training texts hold no word "
                f"seen at least {min_count} times, so there is no vocabulary; "
                "are the texts empty, or is it the wrong column?"
            )
        if sequence_length is None:
            sequence_length = int(np.clip(np.percentile(lengths, 95), 8, 256))
        return cls(vocabulary, sequence_length)

    def __call__(self, texts):
        """Returns int32 ids of shape `(len(texts), sequence_length)`."""
        tokens = tokenize(texts)
        ids = tokens.with_flat_values(
            tf.cast(self.lookup(tokens.flat_values), tf.int32)
        )
        return ids.to_tensor(default_value=0, shape=[None, self.sequence_length])

    def transform(self, texts, batch_size=1024):
        """`__call__` over a NumPy array of texts, in batches."""
        return np.concatenate(
            [
                self(tf.constant(texts[start : start + batch_size])).numpy()
                for start in range(0, len(texts), batch_size)
            ]
        )

    def save_vocabulary(self, path):
        """Writes one token per line, in UTF-8; the line number is the id.

        Written beside `path` first and renamed onto it, so a failure never
        leaves a truncated vocabulary behind a previous run's model.
        """
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(
            "\n".join([PAD, OOV, *self.vocabulary]) + "\n", encoding="utf-8"
        )
        os.replace(partial, path)


def tokenize(texts):
    """Normalised tokens of a batch of strings, as a `tf.RaggedTensor`."""
    texts = tf_text.case_fold_utf8(tf_text.normalize_utf8(texts, "NFKC"))
    return tf_text.UnicodeScriptTokenizer().tokenize(texts)


def confusion_matrix(true, predicted, num_classes):
    """Counts: row is the true class, column the predicted one."""
    matrix = np.zeros((num_classes, num_classes), dtype="int64")
    np.add.at(matrix, (true, predicted), 1)
    return matrix


def per_class_report(matrix, classes):
    """Precision, recall and support per class from a confusion matrix."""
    report = {}
    for k, name in enumerate(classes):
        predicted, actual = matrix[:, k].sum(), matrix[k, :].sum()
        report[name] = {
            "precision": float(matrix[k, k] / predicted) if predicted else 0.0,
            "recall": float(matrix[k, k] / actual) if actual else 0.0,
            "support": int(actual),
        }
    return report


def export_string_saved_model(model, vectorizer, path):
    """Writes a SavedModel whose `serving_default` takes raw strings.

    Tokenisation runs inside the graph, so a server sends the text itself.

    Args:
        model: The trained model taking token ids.
        vectorizer: The `TextVectorizer` it was trained with.
        path: The SavedModel folder (replaced if it exists).

    Returns:
        The path.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(vectorizer.lookup)

    def serve(texts):
        return {"outputs": model(vectorizer(texts), training=False)}

    archive.add_endpoint(
        "serving_default",
        serve,
        input_signature=[tf.TensorSpec([None], tf.string, name="texts")],
    )
    archive.write_out(str(path), verbose=False)
    return Path(path)


def fit_vectorizer(args, splits, max_tokens=20000):
    """The `TextVectorizer` of the training split, with `--max-length`.

    The vocabulary and the sequence length come from the training split only;
    `max_tokens` is the largest vocabulary, `[PAD]`/`[UNK]` included.
    """
    return TextVectorizer.adapt(splits["train"][0], max_tokens, args.max_length)


def vectorize(splits, vectorizer, classes):
    """The splits as token ids; prints their sizes.

    Returns:
        `(ids, labels)`: dicts from the split's name to its int32 token ids
        `(texts, sequence_length)` and to its label ids.
    """
    ids = {name: vectorizer.transform(texts) for name, (texts, _) in splits.items()}
    labels = {name: y for name, (_, y) in splits.items()}
    print(
        f"{len(ids['train'])} training, {len(ids['val'])} validation, "
        f"{len(ids['test'])} test texts; {len(classes)} classes; vocabulary "
        f"{vectorizer.vocabulary_size}; {vectorizer.sequence_length} tokens per text"
    )
    return ids, labels


def evaluate(predictions, labels, classes, title):
    """Accuracy of each model and of the majority class, and the per-class
    table of `FourGateLSTM`'s predictions; prints both.

    Args:
        predictions: Dict from a model's kind (`"four_gate"`, `"keras_lstm"`)
            to its predicted class ids on the test split.
        labels: Dict from a split's name to its label ids.
        classes: The class names.
        title: What the table of results is about.

    Returns:
        The metrics for `metrics.json`.
    """
    truth = labels["test"]
    # The majority baseline: the most frequent training class, on the test split.
    majority = np.bincount(labels["train"], minlength=len(classes)).argmax()
    matrix = confusion_matrix(truth, predictions["four_gate"], len(classes))
    metrics = {
        "test_accuracy": float(np.mean(predictions["four_gate"] == truth)),
        "majority_baseline_accuracy": float(np.mean(truth == majority)),
    }
    if "keras_lstm" in predictions:
        accuracy = float(np.mean(predictions["keras_lstm"] == truth))
        metrics["keras_lstm_test_accuracy"] = accuracy
    metrics.update(
        classes=classes,
        per_class=per_class_report(matrix, classes),
        confusion_matrix=matrix.tolist(),
    )
    common.print_table(
        f"Test accuracy, {title} ({len(truth)} texts)",
        [
            ("majority class", metrics["majority_baseline_accuracy"]),
            ("FourGateLSTM", metrics["test_accuracy"]),
        ]
        + (
            [("keras.layers.LSTM", metrics["keras_lstm_test_accuracy"])]
            if "keras_lstm" in predictions
            else []
        ),
    )
    common.print_table(
        "Per class on the test split: precision / recall",
        [
            (name, f"{row['precision']:.3f} / {row['recall']:.3f}")
            for name, row in metrics["per_class"].items()
        ],
    )
    return metrics


def gate_example(ids, max_tokens=40):
    """The index of the test text the gates are shown on.

    The first one of 1 to `max_tokens` tokens (a plot of hundreds of tokens
    has no readable labels, and an empty text has no gates), else the
    shortest one that holds a token.
    """
    lengths = (ids != 0).sum(axis=1)
    short = np.flatnonzero((lengths > 0) & (lengths <= max_tokens))
    if len(short):
        return int(short[0])
    return int(np.argmin(np.where(lengths > 0, lengths, np.iinfo(lengths.dtype).max)))


def tokens_of(vectorizer, text):
    """The tokens of `text` the model reads, in order, as strings; one not in
    the vocabulary (id 1) is shown in brackets, `[word]`."""
    tokens = tokenize(tf.constant([text])).to_list()[0][: vectorizer.sequence_length]
    known = set(vectorizer.vocabulary)
    words = [token.decode("utf-8") for token in tokens]
    return [word if word in known else f"[{word}]" for word in words]


def caption(text, true, predicted, confidence, width=80):
    """One line on a test text: the text (shortened to `width` characters),
    its class and the model's prediction."""
    shown = textwrap.shorten(text, width, placeholder=" ...")
    return f'"{shown}" (true: {true}; predicted: {predicted}, {confidence:.2f})'


def export_text_model(model, vectorizer, probe_texts, output_dir):
    """Writes the exports; returns their paths and measured parity.

    The SavedModel takes raw strings (checked against the Keras model on
    `probe_texts`); the TFLite file takes token ids of fixed length, with the
    vocabulary beside it.
    """
    saved_model = export_string_saved_model(
        model, vectorizer, output_dir / "saved_model"
    )
    served = (
        tf.saved_model.load(str(saved_model))
        .signatures["serving_default"](tf.constant(probe_texts))["outputs"]
        .numpy()
    )
    expected = model.predict(vectorizer.transform(probe_texts), verbose=0)
    vectorizer.save_vocabulary(output_dir / "vocabulary.txt")
    results = {
        "saved_model": os.path.abspath(saved_model),
        "saved_model_max_abs_diff": float(np.max(np.abs(served - expected))),
        "vocabulary": os.path.abspath(output_dir / "vocabulary.txt"),
        **common.export_model(model, output_dir, saved_model=False),
    }
    print_why_a_loop(model, results["tflite_recurrent_ops"])
    return results


def print_why_a_loop(model, recurrent_ops):
    """Prints what each LSTM became in `model.tflite` (its export report's
    `recurrent_ops`) and, for a loop, why it is not TFLite's own LSTM op."""
    for name, op in recurrent_ops.items():
        line = f"In model.tflite, layer '{name}' is {op}"
        if op == "WHILE":
            use_gate = getattr(model.get_layer(name).cell, "use_gate", "classic")
            line += (
                " (a loop), not TFLite's native UNIDIRECTIONAL_SEQUENCE_LSTM: it "
                "reads the padding mask (Embedding(mask_zero=True)) to skip the "
                "padding, and that op runs every step"
            )
            if use_gate != "classic":
                line += f"; nor does the op compute the {use_gate} Use gate"
        print(line)


def check_data_flags(args):
    """Refuses flags that would be ignored: the column flags without
    `--csv`, `--cache-dir` (for the default download) with it."""
    given = common.given_flags(args, "--text-column", "--label-column")
    if given and args.csv is None:
        raise ValueError(f"{', '.join(given)} apply only with --csv")
    if args.csv is not None and args.cache_dir is not None:
        raise ValueError("--cache-dir does not apply with --csv")


def add_text_arguments(parser):
    """Adds the flags of the text examples to `parser`."""
    parser.add_argument(
        "--text-column", help="with --csv: the column of texts (default: text)"
    )
    parser.add_argument(
        "--label-column", help="with --csv: the column of labels (default: label)"
    )
    parser.add_argument(
        "--max-length",
        type=common.positive_int,
        default=None,
        help="tokens per text; longer texts keep their first tokens, shorter ones "
        "are 0-padded at the end (default: the 95th percentile of the training "
        "texts' token counts, clipped to 8-256)",
    )


def split_csv(args, *, exactly=None):
    """Reads `--csv` and splits it 70/10/20, stratified and seeded."""
    texts, labels = read_labelled_csv(
        args.csv, args.text_column or "text", args.label_column or "label"
    )
    ids, args.classes = encode_labels(labels, exactly=exactly)
    rows = np.bincount(ids)
    if rows.min() < MIN_ROWS_PER_CLASS:
        short = {
            c: int(n) for c, n in zip(args.classes, rows) if n < MIN_ROWS_PER_CLASS
        }
        raise ValueError(
            f"--csv {args.csv}: too few rows per class for the 70/10/20 "
            f"training/validation/test split: each class needs at least "
            f"{MIN_ROWS_PER_CLASS}, got {dict(list(short.items())[:10])}"
        )
    parts = stratified_split(ids, (0.1, 0.2), args.seed)
    return {
        name: (texts[part], ids[part])
        for name, part in zip(("train", "val", "test"), parts)
    }


def quick_subsample(splits, seed):
    """Keeps a few hundred training texts (and fewer to validate and test)."""
    sizes = {"train": common.QUICK_SAMPLES, "val": common.QUICK_SAMPLES // 4}
    sizes["test"] = sizes["val"]
    return {
        name: tuple(a[stratified_sample(y, sizes[name], seed)] for a in (x, y))
        for name, (x, y) in splits.items()
    }
