"""
Title: Is this review positive? Sentiment analysis with a four-gate LSTM
Description: Classify movie reviews as positive or negative, against the
majority-class baseline, and export a SavedModel that takes raw text.

Run it:

    python examples/sentiment.py                      # IMDB, downloads 80 MB once
    python examples/sentiment.py --csv reviews.csv --text-column text \\
        --label-column label --compare-keras-lstm    # any two-class CSV

The text is normalised and tokenised with `tensorflow-text`, the vocabulary is
built on the training split only, and the model is an embedding (token 0 pads
and is masked), a `FourGateLSTM` and a sigmoid output.
"""

# ## Setup

import sys
from pathlib import Path

import common
import numpy as np
import text_pipeline

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
# The archive's sha256, as TensorFlow Datasets' checksums
# (url_checksums/imdb_reviews.txt) and others publish it.
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
CLASSES = ["negative", "positive"]


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


# ## Load the data
#
# The Large Movie Review Dataset (Maas et al., 2011): 25,000 training and
# 25,000 test reviews of different movies, half of each positive, one text
# file each in `aclImdb/{train,test}/{pos,neg}/`. We keep its test split and
# hold out a stratified tenth of its training split for validation.


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


# ## Train, evaluate and export
#
# `text_pipeline.run` vectorises the splits, trains the model with early
# stopping, compares it with the majority class (and `keras.layers.LSTM` with
# `--compare-keras-lstm`), exports it and draws the plots.


def main(argv=None):
    parser, args = parse_args(argv)
    common.quick_settings(args)
    try:
        common.check_output_dir(args.output_dir, args.overwrite)
        splits = load_dataset(args)
        if args.quick:
            splits = text_pipeline.quick_subsample(splits, args.seed)
        vectorizer = text_pipeline.fit_vectorizer(args, splits)
        args.output_dir = common.prepare_output_dir(args.output_dir, args.overwrite)
    except common.INPUT_ERRORS as error:
        common.exit_with_error(parser, error)
    return text_pipeline.run(args, splits, vectorizer, "positive or negative")


if __name__ == "__main__":
    main(sys.argv[1:])
