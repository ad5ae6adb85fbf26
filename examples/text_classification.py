# %% [markdown]
"""
# Which topic is this? News topic classification with a four-gate LSTM

**Description:** Sort news items into World, Sports, Business and Sci/Tech, with
per-class precision and recall, against the majority-class baseline; see which
words moved the four gates of one news item, and export a SavedModel that takes
raw text.

**Install** the package with the examples' extra, from a clone of the repository:

    pip install -e ".[examples]"

**Run it** as a script from the repository root (`--help` lists every flag):

    python examples/text_classification.py            # AG News, downloads 30 MB once
    python examples/text_classification.py --csv news.csv --compare-keras-lstm  # any multi-class CSV
    python examples/text_classification.py --use-gate classic   # the textbook LSTM cell

or as the notebook `examples/text_classification.ipynb`, the same code paired by
jupytext (its settings are in the last section, "Run it").
"""

# %% [markdown]
# ## Setup
#
# `common.py` and `text_pipeline.py`, beside this file, hold the plumbing the
# tutorials share: the command line, the checks of a user's CSV, downloads, the
# tokeniser and vocabulary, the output folder, the plots and the exports.

# %%
import common
import keras
import numpy as np
import pandas as pd
import text_pipeline

from keras_lstm_gates import FourGateLSTM
from keras_lstm_gates import trace_gates

# Zhang et al.'s CSVs as torchtext and Hugging Face's `ag_news` download them,
# pinned to a commit of that repository so that they cannot change under us.
AG_NEWS_URL = (
    "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/"
    "555590db4219b1243abb1918effd6a7425a2d75f/data/ag_news_csv/{split}.csv"
)
# Their sha256, from the download checksums of Hugging Face's `ag_news`
# (datasets/ag_news/dataset_infos.json); torchtext's AG_NEWS gives their md5.
AG_NEWS_SHA256 = {
    "train": "76a0a2d2f92b286371fe4d4044640910a04a803fdd2538e0f3f29a5c6f6b672e",
    "test": "521465c2428ed7f02f8d6db6ffdd4b5447c1c701962353eb2c40d548c3c85699",
}
CLASSES = ["World", "Sports", "Business", "Sci/Tech"]

# %% [markdown]
# ## Load the data
#
# AG News (Zhang, Zhao & LeCun, 2015): 120,000 training and 7,600 test news
# items, 4 balanced topics, as `train.csv` and `test.csv` with rows
# `class,title,description` (class 1 to 4, no header). The text is the title
# and the description. We keep its test split and hold out a stratified tenth
# of its training split for validation. With `--csv`, any CSV of two or more
# classes, split 70/10/20, stratified and seeded.
#
# The model reads token ids: `tensorflow-text` normalises the text (NFKC, case
# folding) and splits it into words and punctuation; the vocabulary (tokens seen
# at least twice) and the number of tokens per text (the 95th percentile, or
# `--max-length`) come from the training split only. Id 0 pads, id 1 is a word
# not in the vocabulary (`text_pipeline.TextVectorizer`).


# %%
def load_ag_news(cache_dir=None, origin=AG_NEWS_URL, file_hashes=AG_NEWS_SHA256):
    """Downloads (once) and reads AG News: `{train, test: (texts, labels)}`.

    `file_hashes` maps each split to its CSV's sha256 (`None`: unverified).
    """
    splits = {}
    for split in ("train", "test"):
        fname = f"ag_news_{split}.csv"
        path = common.download(
            fname,
            origin.format(split=split),
            cache_dir,
            file_hash=None if file_hashes is None else file_hashes[split],
        )
        frame = pd.read_csv(
            path, header=None, names=["class", "title", "description"], dtype=str
        )
        classes = pd.to_numeric(frame["class"], errors="coerce")
        valid = classes.isin(range(1, len(CLASSES) + 1))
        if not valid.all():
            bad = frame["class"][~valid]
            raise common.damaged_download(
                path,
                f"classes must be 1 to 4, got {bad.iloc[0]!r} on line {bad.index[0] + 1}",
            )
        labels = classes.to_numpy(int) - 1
        texts = (frame["title"] + ". " + frame["description"]).to_numpy(str)
        splits[split] = (texts, labels.astype("int32"))
    return splits


def load_dataset(args):
    """`{train, val, test: (texts, label ids)}`; sets `args.classes`."""
    text_pipeline.check_data_flags(args)
    if args.csv is not None:
        return text_pipeline.split_csv(args)
    ag_news = load_ag_news(args.cache_dir)
    texts, labels = ag_news["train"]
    train, val = text_pipeline.stratified_split(labels, (0.1,), args.seed)
    args.classes = CLASSES
    return {
        "train": (texts[train], labels[train]),
        "val": (texts[val], labels[val]),
        "test": ag_news["test"],
    }


# %% [markdown]
# ## Build the model
#
# An embedding of the token ids (id 0, the padding, is masked, so the LSTM
# skips it), the `FourGateLSTM`, whose last short-term memory sums up the
# news item, dropout, and a softmax over the classes: output `k` is the
# probability of `classes[k]` (for `--csv`, integer labels in numeric order,
# names in alphabetical order). `use_gate` (`--use-gate`) picks the cell's Use
# gate: `"projected"`, the lesson's, or `"classic"`, the textbook LSTM's.


# %%
def build_model(
    vocabulary_size,
    sequence_length,
    num_classes,
    units,
    recurrent="four_gate",
    use_gate="projected",
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
            keras.layers.Dense(num_classes, activation="softmax"),
        ],
        name=f"{recurrent}_topic_classifier",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


# %% [markdown]
# ## Train
#
# `model.fit` with early stopping on the validation split (the best epoch's
# weights restored); on a few thousand items it overfits after two or three.


# %%
def train_model(kind, vectorizer, ids, labels, args):
    """Builds and trains one model; returns `(model, history)`."""
    keras.utils.set_random_seed(args.seed)
    model = build_model(
        vectorizer.vocabulary_size,
        vectorizer.sequence_length,
        len(args.classes),
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
    probabilities = model.predict(ids, verbose=0)
    predicted = probabilities.argmax(axis=-1).astype("int32")
    return predicted, probabilities.max(axis=-1)


# %% [markdown]
# ## What the gates did on one news item
#
# `trace_gates` runs the trained layer on the embedded tokens of one test
# news item and returns every gate's activation at every token. The paragraph
# is computed on that item: how much the forget gate kept and the word where it
# let go most, the word where the learn gate's `i` opened most, where the
# long-term memory moved most, and how open the use gate was. The plot's x-axis
# is the item's words.


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
    print(f"\nThe news item {caption}\n{paragraph}")
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
# AG News; `KLG_ARGS="--quick --overwrite --csv news.csv"`: a one-minute run on
# a CSV). Edit the cell to change them.


# %%
def parse_args(argv):
    parser = common.build_parser(
        "text_classification",
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
    # Bad input (a missing file or column, a single class, an earlier run's
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
    metrics = text_pipeline.evaluate(predictions, labels, classes, "news topic")
    common.plot_confusion_matrix(
        metrics["confusion_matrix"], classes, output_dir / "confusion_matrix.png"
    )

    # What the gates did on one test news item.
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
