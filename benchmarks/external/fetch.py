"""Copy the external datasets' raw files into a cache, check their SHA-256, convert them for ``--data-dir``.

    python -m benchmarks.external.fetch --list
    python -m benchmarks.external.fetch subj adult --from ~/src        # clones of the source repositories
    python -m benchmarks.external.fetch --all --from ~/src

``--from DIR`` (repeatable) is where the raw files are looked for, per source repository ``owner/name``:
``DIR/owner+name/repo`` or ``DIR/owner+name`` or ``DIR/name`` (a clone, bare or not: the file is read at the
pinned commit, else from the work tree), then ``DIR/<dataset>/<local name>`` and ``DIR/<file name>`` (files
you downloaded by hand). A copy whose SHA-256 differs from the registry's is refused and the next place tried.
Raw files land in ``<cache>/raw/<dataset>/``, the converted data in ``<cache>/<dataset>/`` (default cache
``~/.cache/lightning-app/external``, or ``$LIGHTNING_APP_EXTERNAL``, or ``--cache-dir``), with a
``provenance.json`` naming the source, the digests, the split and the rows per class.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from benchmarks.external.datasets import BY_NAME, DATASETS, Dataset, RawItem, Source

CACHE_ENV_VAR = "LIGHTNING_APP_EXTERNAL"


class FetchError(RuntimeError):
    """A raw file that cannot be found or does not match its digest."""


def default_cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV_VAR)
    return Path(configured) if configured else Path.home() / ".cache" / "lightning-app" / "external"


# -- digests ----------------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def tree_manifest(folder: Path) -> str:
    """``<sha256>  <relative path>`` per file under ``folder``, sorted by path (``/`` separated), as
    ``(cd folder && find . -type f | sed 's|^\\./||' | LC_ALL=C sort | xargs sha256sum)`` prints it."""
    files = sorted((path.relative_to(folder).as_posix(), path) for path in folder.rglob("*") if path.is_file())
    return "".join(f"{file_sha256(path)}  {relative}\n" for relative, path in files)


def tree_digest(folder: Path) -> str:
    """The SHA-256 of :func:`tree_manifest`: a folder's digest in the registry."""
    return hashlib.sha256(tree_manifest(folder).encode("utf-8")).hexdigest()


def item_digest(path: Path, item: RawItem) -> str:
    return tree_digest(path) if item.folder else file_sha256(path)


# -- finding a raw file -----------------------------------------------------------------------------------
def is_git_dir(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir()


def git_revisions(git_dir: Path, commit: str) -> list[str]:
    """The pinned commit if the clone has it, then ``HEAD`` (the digest decides whether its file will do)."""
    try:
        found = subprocess.run(
            ["git", f"--git-dir={git_dir}", "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True, check=False
        )
    except FileNotFoundError:  # no git here: the clone's work tree (if any) is still tried
        return []
    return [commit, "HEAD"] if found.returncode == 0 else ["HEAD"]


def copy_from_git(git_dir: Path, revision: str, item: RawItem, target: Path) -> None:
    if not item.folder:
        shown = subprocess.run(
            ["git", f"--git-dir={git_dir}", "show", f"{revision}:{item.path}"], capture_output=True, check=False
        )
        if shown.returncode != 0:
            raise FetchError(shown.stderr.decode(errors="replace").strip())
        target.write_bytes(shown.stdout)
        return
    archived = subprocess.run(
        ["git", f"--git-dir={git_dir}", "archive", "--format=tar", revision, item.path],
        capture_output=True,
        check=False,
    )
    if archived.returncode != 0:
        raise FetchError(archived.stderr.decode(errors="replace").strip())
    prefix = item.path.rstrip("/") + "/"
    with tarfile.open(fileobj=io.BytesIO(archived.stdout)) as archive:
        for member in archive.getmembers():
            if member.isfile() and member.name.startswith(prefix):
                relative = Path(member.name[len(prefix) :])
                if relative.is_absolute() or ".." in relative.parts:
                    raise FetchError(f"unsafe path in archive: {member.name}")
                destination = target / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                handle = archive.extractfile(member)
                assert handle is not None
                destination.write_bytes(handle.read())


def copy_from_path(source: Path, item: RawItem, target: Path) -> None:
    if item.folder:
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)


def candidates(dataset: Dataset, item: RawItem, roots: Sequence[Path]) -> Iterator[tuple[str, object]]:
    """Places that may hold ``item``: ``("git", (git dir, revision))`` or ``("path", path)``."""
    owner, name = dataset.source.repo.split("/")
    for root in roots:
        for repo_dir in (root / f"{owner}+{name}" / "repo", root / f"{owner}+{name}", root / name, root / owner / name):
            if is_git_dir(repo_dir):
                for revision in git_revisions(repo_dir, dataset.source.commit):
                    yield "git", (repo_dir, revision)
            elif repo_dir.is_dir():
                path = repo_dir / item.path
                if path.exists():
                    yield "path", path
                if is_git_dir(repo_dir / ".git"):
                    for revision in git_revisions(repo_dir / ".git", dataset.source.commit):
                        yield "git", (repo_dir / ".git", revision)
        for path in (root / dataset.name / item.local, root / Path(item.path).name, root / item.path):
            if path.exists() and path.is_dir() == item.folder:
                yield "path", path


def fetch_item(dataset: Dataset, item: RawItem, roots: Sequence[Path], raw_dir: Path) -> Path:
    """``raw_dir/<local>`` holding the verified item (kept from an earlier run if its digest matches)."""
    target = raw_dir / item.local
    if target.exists() and item_digest(target, item) == item.sha256:
        return target
    tried = []
    for how, where in candidates(dataset, item, roots):
        partial = raw_dir / f".{item.local}.partial"
        remove(partial)
        raw_dir.mkdir(parents=True, exist_ok=True)
        if item.folder and how == "git":
            partial.mkdir()  # copytree creates its own target
        try:
            if how == "git":
                git_dir, revision = where  # type: ignore[misc]
                copy_from_git(git_dir, revision, item, partial)
                label = f"{git_dir} at {revision}"
            else:
                copy_from_path(where, item, partial)  # type: ignore[arg-type]
                label = str(where)
        except (FetchError, OSError) as err:
            tried.append(f"{where}: {err}")
            remove(partial)
            continue
        digest = item_digest(partial, item)
        if digest == item.sha256:
            remove(target)
            partial.rename(target)
            return target
        tried.append(f"{label}: SHA-256 {digest}, expected {item.sha256}")
        remove(partial)
    where_from = "\n  ".join(tried) if tried else "found nowhere (give --from DIR; see benchmarks/external/README.md)"
    raise FetchError(f"{dataset.name}: {item.path} from {dataset.source.url(item)}:\n  {where_from}")


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# -- converting -------------------------------------------------------------------------------------------
def provenance(dataset: Dataset, counts: dict) -> dict:
    source: Source = dataset.source
    return {
        "name": dataset.name,
        "kind": dataset.kind,
        "description": dataset.description,
        "repo": source.repo,
        "commit": source.commit,
        "license": source.license,
        "items": [
            {"path": item.path, "sha256": item.sha256, "folder": item.folder, "url": source.url(item)}
            for item in source.items
        ],
        "split": dataset.split,
        "target": dataset.target,
        "id_columns": list(dataset.id_columns),
        "origin": dataset.origin,
        "notes": dataset.notes,
        "rows": counts,
    }


def convert(dataset: Dataset, raw_dir: Path, out: Path) -> dict:
    """Converts into ``out`` (replaced whole, built beside it first); returns the rows per split and class."""
    partial = out.parent / f".{out.name}.partial"
    remove(partial)
    partial.mkdir(parents=True)
    try:
        counts = dataset.convert(raw_dir, partial)
        (partial / "provenance.json").write_text(json.dumps(provenance(dataset, counts), indent=2) + "\n")
    except BaseException:
        remove(partial)
        raise
    remove(out)
    partial.rename(out)
    return counts


def fetch(dataset: Dataset, roots: Sequence[Path], cache_dir: Path) -> dict:
    raw_dir = cache_dir / "raw" / dataset.name
    for item in dataset.source.items:
        fetch_item(dataset, item, roots, raw_dir)
    return convert(dataset, raw_dir, cache_dir / dataset.name)


# -- command line -----------------------------------------------------------------------------------------
def summary(counts: dict) -> str:
    return ", ".join(f"{split} {sum(found.values())}" for split, found in counts.items())


def listing(cache_dir: Path) -> str:
    lines = ["name             kind   classes  state      source"]
    for dataset in DATASETS:
        converted = (cache_dir / dataset.name / "provenance.json").is_file()
        state = "converted" if converted else "-"
        lines.append(
            f"{dataset.name:<16} {dataset.kind:<6} {dataset.classes:>7}  {state:<10} "
            f"{dataset.source.repo}@{dataset.source.commit[:10]}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="datasets to fetch (see --list)")
    parser.add_argument("--all", action="store_true", help="every dataset of the registry")
    parser.add_argument("--list", action="store_true", help="list the registry and what is converted, then exit")
    parser.add_argument("--from", dest="roots", type=Path, action="append", default=[], metavar="DIR",
                        help="where to look for the raw files (repeatable)")  # fmt: skip
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help=f"default ${CACHE_ENV_VAR} or {default_cache_dir()}"
    )
    args = parser.parse_args(argv)
    cache_dir = (args.cache_dir or default_cache_dir()).expanduser()
    if args.list:
        print(listing(cache_dir))
        return 0
    unknown = [name for name in args.names if name not in BY_NAME]
    if unknown or not (args.names or args.all):
        parser.error(f"unknown dataset(s) {unknown}; known: {sorted(BY_NAME)}" if unknown else "name datasets or --all")
    chosen = DATASETS if args.all else tuple(BY_NAME[name] for name in args.names)
    roots = [root.expanduser() for root in args.roots]
    failed = 0
    for dataset in chosen:
        try:
            counts = fetch(dataset, roots, cache_dir)
        except FetchError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
            continue
        print(f"{dataset.name}: {summary(counts)} -> {cache_dir / dataset.name}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
