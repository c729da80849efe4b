"""A non-Shakespeare user corpus, offline: this machine's English man pages (section 1), one client per page.

Each page is rendered with `man -l` (plain text via `col -b`), one file per
page under results/quant_study/manpages/, for `--dataset=textdir:... --text_unit=paragraph`.
Pages with fewer than 300 words are skipped; the first 1,200 pages in name
order that qualify are kept.
"""
import os
import re
import subprocess

SRC = "/usr/share/man/man1"
OUT = os.path.join("results", "quant_study", "manpages")  # run from the repository root
KEEP, MIN_WORDS = 1200, 300

os.makedirs(OUT, exist_ok=True)
kept = 0
for name in sorted(os.listdir(SRC)):
  if kept >= KEEP:
    break
  if not name.endswith(".1.gz"):
    continue
  try:
    text = subprocess.run(f"MANWIDTH=100 man -l {os.path.join(SRC, name)} 2>/dev/null | col -b",
                          shell=True, capture_output=True, text=True, timeout=20).stdout
  except subprocess.TimeoutExpired:
    continue
  lines = text.splitlines()[1:-1]  # the header and footer lines
  body = "\n".join(line.strip() for line in lines)
  body = re.sub(r"\n{3,}", "\n\n", body)
  if len(re.findall(r"[A-Za-z]+", body)) < MIN_WORDS:
    continue
  with open(os.path.join(OUT, name[:-len(".1.gz")] + ".txt"), "w", encoding="utf-8") as f:
    f.write(body)
  kept += 1
print(kept, "pages")
