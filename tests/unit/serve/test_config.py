"""The service's settings: the documented default split of cores between training and inference."""

from __future__ import annotations

import pytest

from lmtune.serve.config import ServeConfig, split_threads, usable_cores


@pytest.mark.parametrize(("cores", "workers", "expected"), [
    (1, 1, (1, 1)), (2, 1, (1, 1)), (4, 1, (3, 1)), (16, 1, (12, 4)), (16, 2, (6, 4)), (64, 1, (56, 8)), (2, 3, (1, 1)),
])
def test_split_threads(cores, workers, expected):
    assert split_threads(cores, workers) == expected


def test_unset_threads_are_filled_in_and_set_ones_kept(tmp_path):
    cfg = ServeConfig(data_dir=str(tmp_path)).with_thread_split()
    assert (cfg.training_threads, cfg.inference_threads) == split_threads(usable_cores(), 1)
    own = ServeConfig(data_dir=str(tmp_path), training_threads=5, inference_threads=3).with_thread_split()
    assert (own.training_threads, own.inference_threads) == (5, 3)


def test_saved_settings_and_data_folder_are_private(tmp_path):
    root = tmp_path / "data"
    root.mkdir(mode=0o755)
    path = ServeConfig(data_dir=str(root)).save()
    assert path.stat().st_mode & 0o777 == 0o600 and root.stat().st_mode & 0o777 == 0o700


def test_database_is_sqlite_in_the_data_folder_unless_a_postgresql_url_is_given(tmp_path):
    assert ServeConfig(data_dir=str(tmp_path)).database == str(tmp_path / "lmtune.db")
    url = "postgresql://lmtune@db.internal/lmtune"
    assert ServeConfig(data_dir=str(tmp_path), database_url=url).database == url
    with pytest.raises(ValueError, match="database_url"):
        ServeConfig(database_url="mysql://db/lmtune")


def test_serve_command_takes_a_database_url(tmp_path):
    import argparse

    from lmtune.serve.cli import add_keys_parser, add_serve_parser

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_serve_parser(sub)
    add_keys_parser(sub)
    url = "postgresql://lmtune@db/lmtune"
    assert parser.parse_args(["serve", "--database-url", url]).database_url == url
    assert parser.parse_args(["keys", "list", "--database-url", url]).database_url == url
