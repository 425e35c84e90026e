"""benchmarks.external: each converter on a few hand-written rows or images, and fetch's copy-and-verify step.

No network and no cache: every raw file is written into ``tmp_path``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.external import converters as cv
from benchmarks.external import fetch as fetch_module
from benchmarks.external.datasets import BY_NAME, DATASETS, Dataset, RawItem, Source
from datamodules.base import read_csv_rows
from datamodules.image_folder import list_class_folders, list_image_files
from datamodules.text_files import read_labeled_texts


def tsv(path: Path) -> list[tuple[str, str]]:
    labels, texts, _ = read_labeled_texts(path)
    return list(zip(labels, texts, strict=True))


def test_registry_is_complete():
    kinds = [dataset.kind for dataset in DATASETS]
    assert kinds.count("text") >= 4 and kinds.count("table") >= 3 and kinds.count("image") >= 2
    assert len(BY_NAME) == len(DATASETS)
    for dataset in DATASETS:
        assert len(dataset.source.commit) == 40 and dataset.source.license and dataset.split
        for item in dataset.source.items:
            assert len(item.sha256) == 64 and int(item.sha256, 16) >= 0
        assert (dataset.target is not None) == (dataset.kind == "table")
    # Kept out as independent checks.
    paths = " ".join(item.path.lower() for dataset in DATASETS for item in dataset.source.items)
    for excluded in ("ag_news", "rt-polarity", "titanic", "digits"):
        assert excluded not in paths


def test_stratified_split_is_seeded_and_per_class():
    labels = ["a"] * 10 + ["b"] * 5 + ["c"]
    test = cv.stratified_split(labels)
    assert np.array_equal(test, cv.stratified_split(labels))
    chosen = [label for label, is_test in zip(labels, test, strict=True) if is_test]
    assert chosen.count("a") == 2 and chosen.count("b") == 1 and chosen.count("c") == 0
    assert not np.array_equal(test, cv.stratified_split(labels, seed=1))


def test_stratified_split_keeps_duplicates_on_one_side():
    labels = ["a"] * 10
    keys = ["x", "y", "x", "z", "x", "w", "v", "u", "t", "s"]
    for seed in range(20):
        test = cv.stratified_split(labels, seed=seed, keys=keys)
        assert len({bool(is_test) for key, is_test in zip(keys, test, strict=True) if key == "x"}) == 1
    unique = [str(i) for i in range(10)]
    assert np.array_equal(cv.stratified_split(labels, keys=unique), cv.stratified_split(labels))


def test_one_file_per_label(tmp_path: Path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir(), out.mkdir()
    (raw / "pos.txt").write_bytes(b"".join(f"good {i}\twith a tab\n".encode() for i in range(5)) + b"\n  \n")
    (raw / "neg.txt").write_bytes(b"bad caf\xe9\n" + b"".join(f"bad {i}\n".encode() for i in range(4)))
    counts = cv.one_file_per_label({"positive": "pos.txt", "negative": "neg.txt"})(raw, out)
    assert counts == {"train": {"negative": 4, "positive": 4}, "test": {"negative": 1, "positive": 1}}
    assert (out / "train.tsv").read_text().startswith("label\ttext\n")
    rows = tsv(out / "train.tsv") + tsv(out / "test.tsv")
    assert sorted(rows) == sorted(
        [("positive", f"good {i} with a tab") for i in range(5)]
        + [("negative", "bad café")]
        + [("negative", f"bad {i}") for i in range(4)]
    )


def test_trec_keeps_the_coarse_class_and_the_source_split(tmp_path: Path):
    (tmp_path / "train.txt").write_text("DESC:manner How did serfdom develop ?\nHUM:ind Who was Galileo ?\n")
    (tmp_path / "test.txt").write_text("NUM:dist How far is it from Denver to Aspen ?\n")
    out = tmp_path / "out"
    out.mkdir()
    assert cv.convert_trec(tmp_path, out) == {"train": {"DESC": 1, "HUM": 1}, "test": {"NUM": 1}}
    assert tsv(out / "train.tsv") == [("DESC", "How did serfdom develop ?"), ("HUM", "Who was Galileo ?")]
    assert tsv(out / "test.tsv") == [("NUM", "How far is it from Denver to Aspen ?")]


def test_tweeteval_merges_train_and_validation(tmp_path: Path):
    (tmp_path / "mapping.txt").write_text("0\tanger\n1\tjoy")
    (tmp_path / "train_text.txt").write_text("so mad \n@user yay 🎉 \n")
    (tmp_path / "train_labels.txt").write_text("0\n1\n")
    (tmp_path / "val_text.txt").write_text("grr\n")
    (tmp_path / "val_labels.txt").write_text("0\n")
    (tmp_path / "test_text.txt").write_text("happy\n")
    (tmp_path / "test_labels.txt").write_text("1\n")
    out = tmp_path / "out"
    out.mkdir()
    assert cv.convert_tweeteval(tmp_path, out) == {"train": {"anger": 2, "joy": 1}, "test": {"joy": 1}}
    assert tsv(out / "train.tsv") == [("anger", "so mad"), ("joy", "@user yay 🎉"), ("anger", "grr")]


def test_tweeteval_refuses_misaligned_labels(tmp_path: Path):
    (tmp_path / "mapping.txt").write_text("0\tanger\n")
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}_text.txt").write_text("a\nb\n")
        (tmp_path / f"{split}_labels.txt").write_text("0\n")
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        cv.convert_tweeteval(tmp_path, tmp_path)


def test_label_folders_join_each_document_into_one_line(tmp_path: Path):
    for topic in ("sport", "tech"):
        folder = tmp_path / "docs" / topic
        folder.mkdir(parents=True)
        for i in range(5):
            (folder / f"{i:03d}.txt").write_bytes(f"{topic} headline {i}\n\nBody\ttext costs \xa35.\n".encode("cp1252"))
    (tmp_path / "docs" / "README.TXT").write_text("not a document")
    out = tmp_path / "out"
    out.mkdir()
    assert cv.convert_label_folders(tmp_path, out) == {
        "train": {"sport": 4, "tech": 4},
        "test": {"sport": 1, "tech": 1},
    }
    rows = tsv(out / "test.tsv")
    assert [label for label, _ in rows] == ["sport", "tech"]
    assert all(text.endswith("Body text costs £5.") and "\t" not in text for _, text in rows)


def test_review_polarity_reads_the_archive(tmp_path: Path):
    with tarfile.open(tmp_path / "review_polarity.tar.gz", "w:gz") as archive:
        for polarity in ("pos", "neg"):
            for i in range(5):
                data = f"{polarity} review {i}\nsecond line .\n".encode()
                member = tarfile.TarInfo(f"txt_sentoken/{polarity}/cv{i:03d}.txt")
                member.size = len(data)
                archive.addfile(member, io.BytesIO(data))
        readme = tarfile.TarInfo("poldata.README.2.0")
        readme.size = 3
        archive.addfile(readme, io.BytesIO(b"doc"))
    out = tmp_path / "out"
    out.mkdir()
    counts = cv.convert_review_polarity(tmp_path, out)
    assert counts == {"train": {"negative": 4, "positive": 4}, "test": {"negative": 1, "positive": 1}}
    assert all(text.endswith(" second line .") for _, text in tsv(out / "train.tsv"))


def test_headerless_table_with_a_source_split(tmp_path: Path):
    columns = ("age", "workclass", "income")
    (tmp_path / "train.csv").write_text("39, State-gov, <=50K\n50, ?, >50K\n\n")
    (tmp_path / "test.csv").write_text("25, Private, <=50K.\n")
    out = tmp_path / "out"
    out.mkdir()
    counts = cv.headerless_table(columns, "income", ["train.csv", "test.csv"])(tmp_path, out)
    assert counts == {"train": {"<=50K": 1, ">50K": 1}, "test": {"<=50K": 1}}
    rows = [row for _, row in read_csv_rows(out / "train.csv", list(columns))]
    assert rows == [
        {"age": "39", "workclass": "State-gov", "income": "<=50K"},
        {"age": "50", "workclass": "", "income": ">50K"},
    ]
    assert read_csv_rows(out / "test.csv", ["income"])[0][1]["income"] == "<=50K"


def test_headerless_table_with_a_seeded_split_and_renamed_labels(tmp_path: Path):
    columns = ("purpose", "amount, in DM", "class")
    lines = [f"A4{i},{100 * i},{1 + i % 2}" for i in range(10)]
    (tmp_path / "german.csv").write_text("\n".join(lines))
    out = tmp_path / "out"
    out.mkdir()
    counts = cv.headerless_table(columns, "class", ["german.csv"], labels={"1": "good", "2": "bad"})(tmp_path, out)
    assert counts == {"train": {"bad": 4, "good": 4}, "test": {"bad": 1, "good": 1}}
    with (out / "train.csv").open(newline="") as handle:
        header = next(csv.reader(handle))
    assert header == list(columns)  # a comma in a column name is quoted
    rows = read_csv_rows(out / "train.csv", ["class"]) + read_csv_rows(out / "test.csv", ["class"])
    assert sorted(row["amount, in DM"] for _, row in rows) == sorted(str(100 * i) for i in range(10))


def test_headerless_table_refuses_a_short_row(tmp_path: Path):
    (tmp_path / "a.csv").write_text("1,2,3\n4,5\n")
    with pytest.raises(ValueError, match="line 2: 2 fields, expected 3"):
        cv.headerless_table(("a", "b", "c"), "c", ["a.csv"])(tmp_path, tmp_path)


def test_pixel_csv_to_png_folders(tmp_path: Path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 4 * 4))
    labels = [0] * 5 + [7] * 5
    with gzip.open(tmp_path / "digits.csv.gz", "wt") as handle:
        for pixels, label in zip(images, labels, strict=True):
            handle.write(",".join(f"{value:.1f}" for value in pixels) + f",{label:.1f}\n")
    out = tmp_path / "out"
    out.mkdir()
    counts = cv.convert_pixel_csv(tmp_path, out, name="digits.csv.gz", side=4)
    assert counts == {"train": {"0": 4, "7": 4}, "test": {"0": 1, "7": 1}}
    assert list_class_folders(out / "train") == ["0", "7"]
    for split in ("train", "test"):
        for path, class_id in list_image_files(out / split, ["0", "7"]):
            row = int(path.stem)
            assert labels[row] == int(["0", "7"][class_id])
            assert np.array_equal(np.asarray(Image.open(path)), images[row].reshape(4, 4).astype(np.uint8))


def test_image_folders_are_copied(tmp_path: Path):
    for split, per_class in (("train", 3), ("test", 1)):
        for name in ("daisy", "iris"):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / f"image_{i:04d}.jpg")
            (folder / "Thumbs.db").write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    counts = cv.convert_image_folders(tmp_path, out)
    assert counts == {"train": {"daisy": 3, "iris": 3}, "test": {"daisy": 1, "iris": 1}}
    assert len(list_image_files(out / "train", list_class_folders(out / "train"))) == 6
    assert not list(out.rglob("Thumbs.db"))


# -- fetch: copy, verify, convert ------------------------------------------------------------------------
def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


POS, NEG = b"".join(f"fine {i}\n".encode() for i in range(5)), b"".join(f"awful {i}\n".encode() for i in range(5))


def tiny_dataset(pos_digest: str = sha256(POS), repo: str = "someone/corpus") -> Dataset:
    items = (RawItem("data/pos.txt", pos_digest, "pos.txt"), RawItem("data/neg.txt", sha256(NEG), "neg.txt"))
    return Dataset(
        name="tiny",
        kind="text",
        description="test",
        classes=2,
        source=Source(repo, "0" * 40, items, "test"),
        convert=cv.one_file_per_label({"positive": "pos.txt", "negative": "neg.txt"}),
        split="seeded",
    )


def test_fetch_copies_verifies_and_converts(tmp_path: Path):
    source = tmp_path / "downloads" / "tiny"
    source.mkdir(parents=True)
    (source / "pos.txt").write_bytes(POS)
    (source / "neg.txt").write_bytes(NEG)
    cache = tmp_path / "cache"
    counts = fetch_module.fetch(tiny_dataset(), [tmp_path / "downloads"], cache)
    assert counts == {"train": {"negative": 4, "positive": 4}, "test": {"negative": 1, "positive": 1}}
    assert (cache / "raw" / "tiny" / "pos.txt").read_bytes() == POS
    assert len(tsv(cache / "tiny" / "train.tsv")) == 8
    provenance = (cache / "tiny" / "provenance.json").read_text()
    assert sha256(POS) in provenance and "someone/corpus" in provenance
    assert not list(cache.rglob("*.partial"))
    # A second run reuses the verified raw files, with no source at all.
    assert fetch_module.fetch(tiny_dataset(), [], cache) == counts


def test_fetch_refuses_a_file_with_another_digest(tmp_path: Path):
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "pos.txt").write_bytes(POS + b"changed\n")
    with pytest.raises(fetch_module.FetchError, match="expected " + sha256(POS)):
        fetch_module.fetch(tiny_dataset(), [tmp_path], tmp_path / "cache")
    assert not (tmp_path / "cache" / "raw" / "tiny" / "pos.txt").exists()
    with pytest.raises(fetch_module.FetchError, match="found nowhere"):
        fetch_module.fetch(tiny_dataset(), [tmp_path / "empty"], tmp_path / "cache")


def test_fetch_reads_a_git_clone_and_folders(tmp_path: Path):
    clone = tmp_path / "src" / "corpus"
    (clone / "data").mkdir(parents=True)
    (clone / "data" / "pos.txt").write_bytes(POS)
    (clone / "data" / "neg.txt").write_bytes(NEG)
    git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(clone)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "data"], check=True)
    (clone / "data" / "pos.txt").write_bytes(b"edited in the work tree\n")  # the committed file still matches
    counts = fetch_module.fetch(tiny_dataset(), [tmp_path / "src"], tmp_path / "cache")
    assert sum(counts["train"].values()) == 8
    folder = RawItem("data", fetch_module.tree_digest(tmp_path / "cache" / "raw" / "tiny"), "data", folder=True)
    assert len(folder.sha256) == 64
    manifest = fetch_module.tree_manifest(tmp_path / "cache" / "raw" / "tiny")
    assert manifest == f"{sha256(NEG)}  neg.txt\n{sha256(POS)}  pos.txt\n"
    copied = tmp_path / "copied"
    copied.mkdir()
    fetch_module.copy_from_git(clone / ".git", "HEAD", RawItem("data", "", "data", folder=True), copied)
    assert sorted(path.name for path in copied.iterdir()) == ["neg.txt", "pos.txt"]


def test_list_names_every_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert fetch_module.main(["--list", "--cache-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert all(dataset.name in printed for dataset in DATASETS)


def test_table_encoder_uses_the_fitted_rows_only():
    from benchmarks.external.run import TableEncoder

    fit = [["1.0", "red"], ["", "blue"], ["3.0", "red"]]
    encoder = TableEncoder(["size", "colour"], fit)
    assert encoder.numeric == [True, False] and encoder.categories[1] == ["blue", "red"]
    trees = encoder.for_trees([["2", "green"], ["", "blue"]])
    assert np.isnan(trees[1, 0]) and trees[0].tolist() == [2.0, 0.0, 0.0]  # an unseen category: no column set
    linear = encoder.for_linear([["", "red"]])
    # missing -> the median 2.0 of the fitted rows, standardised with their mean 2.0: 0; then the missing flag
    assert linear.tolist() == [[0.0, 1.0, 0.0, 1.0]]


def test_a_partial_rerun_keeps_the_other_datasets_rows(tmp_path: Path):
    from benchmarks.external.run import kept_rows, section
    from benchmarks.peers import Row
    from benchmarks.sections import EXTERNAL

    output = tmp_path / "RESULTS.md"
    first = [Row(name, "peer", "scikit-learn", "test/acc", [0.5], [1.0]) for name in ("subj", "adult")]
    EXTERNAL.write(section(first, tmp_path, 42), output)
    kept = kept_rows(output, ["adult"])
    assert len(kept) == 1 and kept[0].startswith("| subj |")
    second = section([Row("adult", "peer", "scikit-learn", "test/acc", [0.7], [1.0])], tmp_path, 42, None, kept)
    EXTERNAL.write(second, output)
    table = [line for line in output.read_text().splitlines() if line.count(" | ") == 7][2:]
    assert [line.split(" | ")[0] for line in table] == ["| subj", "| adult"] and "0.7000" in table[1]


def test_peers_carve_validation_as_the_tasks_datamodules_do():
    from benchmarks.external.run import val_fraction

    assert (val_fraction("text"), val_fraction("table"), val_fraction("image")) == (0.1, 0.15, 0.1)


def test_project_rows_replace_only_their_own_and_the_summary_compares_with_the_best_peer(tmp_path: Path):
    from benchmarks.external.run import PROJECT_KIND, kept_rows, section
    from benchmarks.peers import Row
    from benchmarks.sections import EXTERNAL

    output = tmp_path / "RESULTS.md"
    peers = [
        Row("subj", "peer a", "scikit-learn", "test/acc", [0.80], [1.0]),
        Row("subj", "peer b", "scikit-learn", "test/acc", [0.90], [2.0]),
        Row("adult", "peer a", "scikit-learn", "test/acc", [0.85], [3.0]),
    ]
    EXTERNAL.write(section(peers, tmp_path, 42), output)
    project = [
        Row("subj", "imdb task, default", PROJECT_KIND, "test/acc", [0.88, 0.87, 0.89], [4.0, 5.0, 6.0]),
        Row("subj", "imdb task, tutorial", PROJECT_KIND, "test/acc", [0.75], [9.0]),
        Row("adult", "titanic task, default", PROJECT_KIND, "test/acc", [0.86], [7.0]),
    ]
    kept = kept_rows(output, [(row.task, row.model) for row in project])
    assert len(kept) == 3  # the peers stay when only this project's models rerun
    notes = "<!-- external_notes:start -->\nRead by hand.\n<!-- external_notes:end -->"
    EXTERNAL.write(section(project, tmp_path, 42, 1, kept, notes), output)
    text = output.read_text()
    assert notes in text
    summary = [line for line in text.splitlines() if line.count(" | ") == 10][2:]
    assert summary[0].split(" | ")[4:11] == [
        "0.8800 (0.8700-0.8900), 3", "0.7500", "peer b: 0.9000", "-2.0", "—", "5.0 (4.0-6.0)", "2.0 |"
    ]  # fmt: skip
    assert "n/a (Titanic's columns only)" in summary[1] and "+1.0" in summary[1]
    assert len([line for line in text.splitlines() if line.count(" | ") == 7]) == 2 + 6


def test_image_peer_trains_the_small_cnn_on_the_datamodules_carve(tmp_path: Path):
    from benchmarks.external.run import CNN_MODEL, TORCH_KIND, image_peers, section

    rng = np.random.default_rng(0)
    for split, per_class in (("train", 10), ("test", 3)):
        for k, name in enumerate(("circle", "square")):
            folder = tmp_path / "images" / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 60, size=(12, 12, 3)) + 150 * k
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    rows = image_peers(BY_NAME["flowers12"], tmp_path / "images", 42, epochs=1, cache_dir=tmp_path / "cache")
    assert len(rows) == 1
    row = rows[0]
    assert (row.task, row.model, row.kind, row.metric) == ("flowers12", CNN_MODEL, TORCH_KIND, "test/acc")
    assert 0.0 <= row.values[0] <= 1.0 and row.seconds[0] > 0
    assert row.note.startswith("epoch 1 of 1 (val ") and row.note.endswith("chosen on validation; 2 classes")
    # The summary counts a PyTorch peer as a peer.
    text = section(rows, tmp_path, 42)
    summary = [line for line in text.splitlines() if line.count(" | ") == 10 and line.startswith("| flowers12")]
    assert f"{CNN_MODEL}: {row.values[0]:.4f}" in summary[0]


def test_peers_over_several_carves_give_one_row_each_with_every_seeds_choice():
    from benchmarks.external.run import PeerRun, peer_rows
    from benchmarks.peers import PeerScore

    def runs(tf_idf: float, c: str) -> list[PeerRun]:
        return [PeerRun("TF-IDF", PeerScore(tf_idf, 1.0, f"C={c}"), 2),
                PeerRun("NBSVM", PeerScore(0.8, 2.0, f"C={c}"), 2)]  # fmt: skip

    subj = BY_NAME["subj"]
    merged = peer_rows(subj, [runs(0.91, "1.0"), runs(0.90, "3.0"), runs(0.92, "1.0")], [42, 43, 44])
    assert [row.model for row in merged] == ["TF-IDF", "NBSVM"]
    assert merged[0].values == [0.91, 0.90, 0.92] and merged[1].seconds == [2.0, 2.0, 2.0]
    assert merged[0].note == "seeds 42,43,44: C=1.0 / C=3.0 / C=1.0 chosen on validation; 2 classes"
    assert "0.9100 (0.9000-0.9200) | 1.0 (1.0-1.0) | 3 |" in merged[0].markdown()  # the median and the range
    (one,) = peer_rows(subj, [runs(0.91, "1.0")[:1]], [42])
    assert (one.task, one.values, one.note) == ("subj", [0.91], "C=1.0 chosen on validation; 2 classes")


def test_paired_difference_is_the_mean_over_seeds_with_a_bootstrap_interval_over_rows():
    from benchmarks.external.run import paired_difference

    rows = 400
    peer = np.zeros(rows, dtype=bool)
    # Seed 1 right on 40 more rows than the peer, seed 2 on 20 more and 10 fewer: +10 and +2.5 points, mean +6.25.
    seed_1, seed_2 = peer.copy(), peer.copy()
    seed_1[:40] = True
    seed_2[100:120] = True
    peer_2 = peer.copy()
    peer_2[200:210] = True
    mean, low, high = paired_difference([seed_1, seed_2], [peer, peer_2], resamples=500)
    assert mean == pytest.approx(6.25)
    assert 0.0 < low < mean < high < 12.5
    assert paired_difference([seed_1], [seed_1]) == (0.0, 0.0, 0.0)  # the same predictions: no difference at all
    with pytest.raises(ValueError):  # a run per seed on each side
        paired_difference([seed_1, seed_2], [peer])


def test_the_summary_shows_the_paired_difference_with_the_best_peer_only(tmp_path: Path):
    from benchmarks.external.run import PROJECT_KIND, section
    from benchmarks.peers import Row

    def default(note: str) -> Row:
        return Row("subj", "imdb task, default", PROJECT_KIND, "test/acc", [0.91], [4.0], note)

    peers = [Row("subj", "peer a", "scikit-learn", "test/acc", [0.80], [1.0]),
             Row("subj", "peer b", "scikit-learn", "test/acc", [0.90], [2.0])]  # fmt: skip
    paired = "seeds 42; paired with {}: +1.0 points, 95% interval -0.2 to +2.1 (bootstrap over the test rows)"
    for note, cell in ((paired.format("peer b"), "+1.0 (-0.2 to +2.1)"), (paired.format("peer a"), "—"), ("", "—")):
        summary = [
            line for line in section([*peers, default(note)], tmp_path, 42).splitlines() if line.count(" | ") == 10
        ]
        assert summary[2].split(" | ")[7:9] == ["+1.0", cell]


def test_correct_test_rows_follow_the_test_files_order(tmp_path: Path, tiny_fit):
    from synthetic_data import write_tiny_data

    from benchmarks.external.run import CorrectTestRows
    from lightning_app.checkpoints import load_checkpoint

    data = write_tiny_data(tmp_path / "data")
    tested = CorrectTestRows()
    # The tutorial's network after one epoch is right on some rows only (the default gets these reviews all right).
    result = tiny_fit("imdb", model="tutorial", data_dir=str(data), cache_dir=str(tmp_path / "cache"), batch_size=8,
                      max_epochs=1, callbacks=[tested])  # fmt: skip
    labels, texts, _ = read_labeled_texts(data / "test.tsv")
    module = load_checkpoint(result.best_model_path, "imdb").module
    predicted = [record["class_id"] for record in module.predict_raw(texts)]  # the file's order
    expected = np.array([p == int(label) for p, label in zip(predicted, labels, strict=True)])
    assert 0 < expected.sum() < len(expected)  # right on some rows, wrong on others: the order matters
    np.testing.assert_array_equal(tested.correct, expected)
    assert tested.correct.mean() == pytest.approx(result.metrics["test/acc"])


def test_the_paired_peer_is_the_summarys_best_peer_on_ties_too():
    from benchmarks.external.run import PeerRun, paired_note
    from benchmarks.peers import PeerScore

    right = np.array([True, True, False, True])
    runs = [PeerRun("TF-IDF", PeerScore.scored([1, 1, 0, 0], [1, 1, 1, 0], 1.0, "C=1"), 2),
            PeerRun("NBSVM", PeerScore.scored([1, 0, 1, 0], [1, 1, 1, 0], 1.0, "C=1"), 2)]  # fmt: skip
    assert runs[0].score.accuracy == runs[1].score.accuracy == 0.75
    # The summary takes the first of tied peers in name order: NBSVM before TF-IDF.
    assert paired_note([runs], [right]).startswith("paired with NBSVM: +0.0 points")
