# %% [markdown]
"""
# Is this review positive? Sentiment analysis with a four-gate LSTM

**Description:** Classify movie reviews as positive or negative, against the
majority-class baseline, see which words moved the four gates of one review,
and export a SavedModel that takes raw text.

**Install** the package with the examples' extra, from a clone of the repository:

    pip install -e ".[examples]"

**Run it** as a script from the repository root (`--help` lists every flag):

    python examples/sentiment.py                      # IMDB, downloads 80 MB once
    python examples/sentiment.py --csv reviews.csv --compare-keras-lstm  # any two-class CSV
    python examples/sentiment.py --use-gate classic   # the textbook LSTM cell

or as the notebook `examples/sentiment.ipynb`, the same code paired by jupytext
(its settings are in the last section, "Run it").
"""

# %% [markdown]
# ## Setup
#
# `common.py` and `text_pipeline.py`, beside this file, hold the plumbing the
# tutorials share: the command line, the checks of a user's CSV, downloads, the
# tokeniser and vocabulary, the output folder, the plots and the exports.

# %%
from pathlib import Path

import common
import keras
import numpy as np
import text_pipeline

from keras_lstm_gates import FourGateLSTM
from keras_lstm_gates import trace_gates

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
# The archive's sha256, as TensorFlow Datasets' checksums
# (url_checksums/imdb_reviews.txt) and others publish it.
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
CLASSES = ["negative", "positive"]

# %% [markdown]
# ## Load the data
#
# The Large Movie Review Dataset (Maas et al., 2011): 25,000 training and
# 25,000 test reviews of different movies, half of each positive, one text
# file each in `aclImdb/{train,test}/{pos,neg}/`. We keep its test split and
# hold out a stratified tenth of its training split for validation. With
# `--csv`, any two-class CSV, split 70/10/20, stratified and seeded.
#
# The model reads token ids: `tensorflow-text` normalises the text (NFKC, case
# folding) and splits it into words and punctuation; the vocabulary (tokens seen
# at least twice) and the number of tokens per text (the 95th percentile, or
# `--max-length`) come from the training split only. Id 0 pads, id 1 is a word
# not in the vocabulary (`text_pipeline.TextVectorizer`).


# %%
def load_imdb(cache_dir=None, origin=IMDB_URL, file_hash=IMDB_SHA256):
    """Downloads (once) and reads IMDB: `{split: (texts, labels)}`."""
    folder = common.download(
        "aclImdb_v1.tar.gz", origin, cache_dir, extract=True, file_hash=file_hash
    )
    root = Path(folder) / "aclImdb"
    splits = {}
    for split in ("train", "test"):
        texts, labels = [], []
        for label, name in enumerate(("neg", "pos")):
            files = sorted((root / split / name).glob("*.txt"))
            if not files:
                raise common.damaged_download(
                    Path(folder).with_name("aclImdb_v1.tar.gz"),
                    f"no reviews in {root / split / name}",
                )
            texts.extend(f.read_text(encoding="utf-8") for f in files)
            labels.extend([label] * len(files))
        splits[split] = (np.array(texts), np.array(labels, dtype="int32"))
    return splits


def load_dataset(args):
    """`{train, val, test: (texts, label ids)}`; sets `args.classes`."""
    text_pipeline.check_data_flags(args)
    if args.csv is not None:
        return text_pipeline.split_csv(args, exactly=2)
    imdb = load_imdb(args.cache_dir)
    texts, labels = imdb["train"]
    train, val = text_pipeline.stratified_split(labels, (0.1,), args.seed)
    args.classes = CLASSES
    return {
        "train": (texts[train], labels[train]),
        "val": (texts[val], labels[val]),
        "test": imdb["test"],
    }


# %% [markdown]
# ## Build the model
#
# An embedding of the token ids (id 0, the padding, is masked, so the LSTM
# skips it), the `FourGateLSTM`, whose last short-term memory sums up the
# review, dropout, and one sigmoid unit: the probability that the review is
# `classes[1]` (`positive`). `use_gate` (`--use-gate`) picks the cell's Use
# gate: `"projected"`, the lesson's, or `"classic"`, the textbook LSTM's.


# %%
def build_model(
    vocabulary_size, sequence_length, units, recurrent="four_gate", use_gate="projected"
):
    if recurrent == "four_gate":
        rnn = FourGateLSTM(units, use_gate=use_gate, name="four_gate_lstm")
    else:
        rnn = keras.layers.LSTM(units, name="keras_lstm")
    model = keras.Sequential(
        [
            keras.Input((sequence_length,), dtype="int32"),
            keras.layers.Embedding(
                vocabulary_size, units, mask_zero=True, name="embedding"
            ),
            rnn,
            keras.layers.Dropout(0.3),
            keras.layers.Dense(1, activation="sigmoid"),
        ],
        name=f"{recurrent}_sentiment",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model


# %% [markdown]
# ## Train
#
# `model.fit` with early stopping on the validation split (the best epoch's
# weights restored); short reviews overfit after an epoch or two.


# %%
def train_model(kind, vectorizer, ids, labels, args):
    """Builds and trains one model; returns `(model, history)`."""
    keras.utils.set_random_seed(args.seed)
    model = build_model(
        vectorizer.vocabulary_size,
        vectorizer.sequence_length,
        args.units,
        kind,
        args.use_gate,
    )
    history = common.train(
        model, (ids["train"], labels["train"]), (ids["val"], labels["val"]), args, kind
    )
    return model, history


# %% [markdown]
# ## Evaluate against the majority class
#
# Accuracy on the test split, against always answering the most frequent
# training class (and `keras.layers.LSTM` of the same size with
# `--compare-keras-lstm`), with precision and recall per class
# (`text_pipeline.evaluate`).


# %%
def predict(model, ids):
    """The predicted class ids on token ids, and the probability of each."""
    positive = model.predict(ids, verbose=0)[:, 0]
    predicted = (positive > 0.5).astype("int32")
    return predicted, np.where(predicted == 1, positive, 1 - positive)


# %% [markdown]
# ## What the gates did on one review
#
# `trace_gates` runs the trained layer on the embedded tokens of one test
# review and returns every gate's activation at every token. The paragraph is
# computed on that review: how much the forget gate kept and the word where it
# let go most, the word where the learn gate's `i` opened most, where the
# long-term memory moved most, and how open the use gate was. The plot's x-axis
# is the review's words.


# %%
def explain_gates(model, vectorizer, text, label, classes, path):
    """Traces, describes and plots the gates on one text; returns the
    numbers the printed paragraph quotes."""
    ids = vectorizer.transform(np.array([text]))
    tokens = text_pipeline.tokens_of(vectorizer, text)
    embedded = model.get_layer("embedding")(ids)
    trace = trace_gates(model.get_layer("four_gate_lstm"), embedded, mask=ids != 0)
    trace = {name: values[:, : len(tokens)] for name, values in trace.items()}
    (predicted,), (confidence,) = predict(model, ids)
    caption = text_pipeline.caption(
        text, classes[label], classes[predicted], confidence
    )
    paragraph, numbers = common.describe_gates(trace, tokens, "tokens")
    print(f"\nThe review {caption}\n{paragraph}")
    common.plot_gates(
        trace,
        path,
        caption,
        labels=tokens,
        xlabel="token ([word]: not in the vocabulary)",
    )
    return numbers


# %% [markdown]
# ## Export
#
# `model.keras` resumes training; the SavedModel's `serving_default` takes raw
# strings (the tokeniser runs inside the graph, checked against the Keras model
# on test texts); the TFLite file takes token ids, with `vocabulary.txt` beside
# it. Its LSTM is a `WHILE` loop, whatever `--use-gate`: TFLite's own LSTM op
# runs every step, and this one must skip the padding, by its mask.


# %%
def export(model, vectorizer, probe_texts, output_dir):
    """Saves and exports the model; returns the exports' paths and parity."""
    model.save(output_dir / "model.keras")
    return text_pipeline.export_text_model(model, vectorizer, probe_texts, output_dir)


# %% [markdown]
# ## Run it
#
# `main` reads like the table of contents of the sections above. As a script its
# settings come from the command line; in a notebook, from `ARGS` below, which
# holds the flags of the `KLG_ARGS` environment variable (none: the full run on
# IMDB; `KLG_ARGS="--quick --overwrite --csv reviews.csv"`: a one-minute run on
# a CSV). Edit the cell to change them.


# %%
def parse_args(argv):
    parser = common.build_parser(
        "sentiment",
        __doc__,
        epochs=10,
        batch_size=64,
        units=64,
    )
    text_pipeline.add_text_arguments(parser)
    return parser, parser.parse_args(argv)


def main(argv=None):
    parser, args = parse_args(argv)
    common.quick_settings(args)
    # Bad input (a missing file or column, not two classes, an earlier run's
    # folder) is one line and exit status 2, before any output.
    try:
        common.check_output_dir(args.output_dir, args.overwrite)
        splits = load_dataset(args)
        if args.quick:
            splits = text_pipeline.quick_subsample(splits, args.seed)
        vectorizer = text_pipeline.fit_vectorizer(args, splits)
        output_dir = common.prepare_output_dir(args.output_dir, args.overwrite)
        before = common.snapshot(output_dir)
    except common.INPUT_ERRORS as error:
        common.exit_with_error(parser, error)
    classes = args.classes

    # The data as token ids.
    ids, labels = text_pipeline.vectorize(splits, vectorizer, classes)

    # Train FourGateLSTM, and keras.layers.LSTM of the same size when asked.
    kinds = ["four_gate", "keras_lstm"] if args.compare_keras_lstm else ["four_gate"]
    models, histories = {}, {}
    for kind in kinds:
        models[kind], histories[kind] = train_model(kind, vectorizer, ids, labels, args)
    model = models["four_gate"]
    common.plot_history(histories, output_dir / "training_curves.png")

    # Evaluate against the majority class.
    predictions = {kind: predict(m, ids["test"])[0] for kind, m in models.items()}
    metrics = text_pipeline.evaluate(
        predictions, labels, classes, "positive or negative"
    )
    common.plot_confusion_matrix(
        metrics["confusion_matrix"], classes, output_dir / "confusion_matrix.png"
    )

    # What the gates did on one test review.
    k = text_pipeline.gate_example(ids["test"])
    metrics["gates"] = explain_gates(
        model,
        vectorizer,
        splits["test"][0][k],
        labels["test"][k],
        classes,
        output_dir / "gates.png",
    )

    # Export.
    exports = export(model, vectorizer, splits["test"][0][:8], output_dir)

    metrics.update(
        num_train=len(ids["train"]),
        num_val=len(ids["val"]),
        num_test=len(ids["test"]),
        vocabulary_size=vectorizer.vocabulary_size,
        sequence_length=vectorizer.sequence_length,
        units=args.units,
        epochs_trained=len(histories["four_gate"].history["loss"]),
        use_gate=args.use_gate,
        **exports,
    )
    common.write_metrics(metrics, output_dir)
    common.report_written(output_dir, before)
    return metrics


# %% tags=["parameters"]
ARGS = common.command_line()

# %%
if __name__ == "__main__":
    metrics = main(ARGS)
