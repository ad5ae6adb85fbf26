"""
Title: Which topic is this? News topic classification with a four-gate LSTM
Description: Sort news items into World, Sports, Business and Sci/Tech, with
per-class precision and recall, against the majority-class baseline.

Run it:

    python examples/text_classification.py            # AG News, downloads 30 MB once
    python examples/text_classification.py --csv news.csv --text-column text \\
        --label-column label --compare-keras-lstm    # any multi-class CSV

Same pipeline as `sentiment.py` (`tensorflow-text` tokenisation, vocabulary
from the training split, masked embedding, `FourGateLSTM`), with a softmax
output over the classes.
"""

# ## Setup

import sys

import common
import pandas as pd
import text_pipeline

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


# ## Load the data
#
# AG News (Zhang, Zhao & LeCun, 2015): 120,000 training and 7,600 test news
# items, 4 balanced topics, as `train.csv` and `test.csv` with rows
# `class,title,description` (class 1 to 4, no header). The text is the title
# and the description. We keep its test split and hold out a stratified tenth
# of its training split for validation.


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


# ## Train, evaluate and export
#
# `text_pipeline.run` vectorises the splits, trains the model with early
# stopping, compares it with the majority class (and `keras.layers.LSTM` with
# `--compare-keras-lstm`), exports it, writes the per-class table and draws
# the plots.


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
    return text_pipeline.run(args, splits, vectorizer, "news topic")


if __name__ == "__main__":
    main(sys.argv[1:])
