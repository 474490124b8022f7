"""Text files (caption.txt, YAML configs) are UTF-8; another encoding is one line naming the file and byte."""
import pytest

from dataset.mat import read_captions
from train.config import BaseConfig
from utils.config import read_yaml_config
from utils.errors import UserError


def test_a_latin1_caption_txt_is_refused_with_offset_and_line(tmp_path):
    path = tmp_path / "caption.txt"
    path.write_bytes("sky blue\ncafé terrace\n".encode("latin-1"))
    with pytest.raises(UserError) as error:
        read_captions(path)
    message = str(error.value)
    assert str(path) in message and "byte 0xe9 at offset 12 (line 2)" in message and "\n" not in message


def test_utf8_caption_txt_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "caption.txt"
    path.write_bytes("\ufeffsky blue\ncafé terrace\n".encode("utf-8"))
    assert read_captions(path) == [["sky blue"], ["café terrace"]]


def test_a_non_utf8_yaml_config_is_refused_with_offset(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"epochs: 2\n# r\xe9sum\xe9\n")
    with pytest.raises(UserError, match=r"config file .*config.yaml is not UTF-8 text: byte 0xe9 at offset 13 "
                                        r"\(line 2\)"):
        read_yaml_config(str(path), BaseConfig)
    path.write_bytes("epochs: 2\n# résumé\n".encode("utf-8"))
    assert read_yaml_config(str(path), BaseConfig) == {"epochs": 2}
