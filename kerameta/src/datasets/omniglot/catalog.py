"""What the Omniglot archives hold, known before any zip is read.

`load_data` needs this to check `archives` and `split_sizes` and to
validate a cache without the zips, and the TFDS builder needs it for the
names of all 1623 labels when it prepares a single split (the stock
builder reads them from all four zips). The ids are not in alphabetical
order, so only the counts are listed, in id order; the tests check the
table against the file names in the zips.
"""

import functools
from typing import NamedTuple

import numpy as np

SOURCE_SIZE = 105  # pixels per side of every Omniglot image
IMAGES_PER_CHARACTER = 20
URL = "https://github.com/brendenlake/omniglot/raw/master/python/"


class Archive(NamedTuple):
    tfds_split: str
    filename: str


ARCHIVES = {
    "background": Archive("train", "images_background.zip"),
    "evaluation": Archive("test", "images_evaluation.zip"),
    "small1": Archive("small1", "images_background_small1.zip"),
    "small2": Archive("small2", "images_background_small2.zip"),
}
TFDS_SPLIT_TO_ARCHIVE = {a.tfds_split: k for k, a in ARCHIVES.items()}

# Size and sha256 of the upstream zips, the values TFDS 4.9 registers for
# their URLs. The zip reader checks against them when `source_dir` has no
# checksum file listing the zip (it cannot ask TFDS: no TensorFlow there).
UPSTREAM_CHECKSUMS = {
    "images_background.zip": (
        9464212,
        "ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640",
    ),
    "images_evaluation.zip": (
        6462886,
        "1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee",
    ),
    "images_background_small1.zip": (
        1319022,
        "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    ),
    "images_background_small2.zip": (
        1580917,
        "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
    ),
}

# (alphabet, characters) in order of global character id (`NNNN - 1` in
# the file names, TFDS's `label`): each alphabet's ids are contiguous.
_BACKGROUND = (
    ("Arcadian", 26),
    ("Armenian", 41),
    ("Asomtavruli_(Georgian)", 40),
    ("Balinese", 24),
    ("Bengali", 46),
    ("Blackfoot_(Canadian_Aboriginal_Syllabics)", 14),
    ("Braille", 26),
    ("Cyrillic", 33),
    ("Early_Aramaic", 22),
    ("Syriac_(Estrangelo)", 23),
    ("Anglo-Saxon_Futhorc", 29),
    ("Futurama", 26),
    ("Grantha", 43),
    ("Greek", 24),
    ("Gujarati", 48),
    ("Hebrew", 22),
    ("Japanese_(hiragana)", 52),
    ("Inuktitut_(Canadian_Aboriginal_Syllabics)", 16),
    ("Malay_(Jawi_-_Arabic)", 40),
    ("Japanese_(katakana)", 47),
    ("Korean", 40),
    ("Latin", 26),
    ("Alphabet_of_the_Magi", 20),
    ("Mkhedruli_(Georgian)", 41),
    ("Burmese_(Myanmar)", 34),
    ("N_Ko", 33),
    ("Ojibwe_(Canadian_Aboriginal_Syllabics)", 14),
    ("Sanskrit", 42),
    ("Tagalog", 17),
    ("Tifinagh", 55),
)
_EVALUATION = (
    ("Angelic", 20),
    ("Atemayar_Qelisayer", 26),
    ("Atlantean", 26),
    ("Aurek-Besh", 26),
    ("Avesta", 26),
    ("Ge_ez", 26),
    ("Glagolitic", 45),
    ("Gurmukhi", 45),
    ("Kannada", 41),
    ("Keble", 26),
    ("Malayalam", 47),
    ("Manipuri", 40),
    ("Mongolian", 30),
    ("Old_Church_Slavonic_(Cyrillic)", 45),
    ("Oriya", 46),
    ("Syriac_(Serto)", 23),
    ("Sylheti", 28),
    ("Tengwar", 25),
    ("Tibetan", 42),
    ("ULOG", 26),
)
ARCHIVE_ALPHABETS = {
    "background": tuple(name for name, _ in _BACKGROUND),
    "evaluation": tuple(name for name, _ in _EVALUATION),
    "small1": ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"),
    "small2": (
        "Greek",
        "Japanese_(katakana)",
        "Latin",
        "Sanskrit",
        "Tagalog",
    ),
}


def _alphabet_ids() -> dict[str, range]:
    """`{alphabet: its global character ids}`."""
    ids, first = {}, 0
    for name, count in _BACKGROUND + _EVALUATION:
        ids[name] = range(first, first + count)
        first += count
    return ids


ALPHABET_IDS = _alphabet_ids()
NUM_CHARACTERS = sum(len(ids) for ids in ALPHABET_IDS.values())


@functools.cache
def character_ids(archive: str) -> np.ndarray:
    """The sorted global character ids held by `archive`."""
    ids = [i for name in ARCHIVE_ALPHABETS[archive] for i in ALPHABET_IDS[name]]
    result = np.array(sorted(ids), dtype=np.int64)
    result.setflags(write=False)
    return result


def label_names() -> list[str]:
    """TFDS's label names: `<alphabet>_<index in alphabet>` by global id."""
    return [
        f"{name}_{i}"
        for name, ids in ALPHABET_IDS.items()
        for i in range(len(ids))
    ]
