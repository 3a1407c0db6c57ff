"""Saved hotword lists: one file of phrases per list, names that are safe file names."""

from __future__ import annotations

from pathlib import Path

import pytest

from zhuanxie.hotword_lists import HotwordListError, HotwordLists, parse_hotwords


def test_lists_are_text_files_of_one_phrase_per_line(tmp_path: Path) -> None:
    lists = HotwordLists(tmp_path / "hotwords")
    assert lists.names() == []  # the folder is made by the first save
    assert lists.save("会议", ["达摩院", " 魔搭 ", "", "达摩院"]) == ("达摩院", "魔搭")
    assert (tmp_path / "hotwords" / "会议.txt").read_text(encoding="utf-8") == "达摩院\n魔搭\n"
    lists.save("b", ["x"])
    assert lists.names() == ["b", "会议"]
    assert lists.load(" 会议 ") == ("达摩院", "魔搭")
    lists.delete("b")
    assert lists.names() == ["会议"]
    with pytest.raises(HotwordListError, match="no hotword list named 'b'"):
        lists.delete("b")


def test_a_list_written_by_hand_reads_like_the_clis_hotwords_file(tmp_path: Path) -> None:
    (tmp_path / "手写.txt").write_text("阿里巴巴\r\n\n deep  learning \n", encoding="utf-8")
    assert HotwordLists(tmp_path).load("手写") == ("阿里巴巴", "deep learning")


@pytest.mark.parametrize("name", ["", "  ", "../up", "a/b", ".hidden", "x" * 65, "tab\there"])
def test_hotword_list_names_must_be_plain_file_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(HotwordListError):
        HotwordLists(tmp_path).save(name, ["x"])
    assert list(tmp_path.iterdir()) == []


def test_hotword_parsing_keeps_spaces_inside_phrases() -> None:
    assert parse_hotwords("deep  learning, 魔搭\r\n达摩院，魔搭") == (
        "deep learning",
        "魔搭",
        "达摩院",
    )
    with pytest.raises(HotwordListError, match="no hotword list named 'missing'"):
        HotwordLists(Path("/nonexistent")).load("missing")
