"""`python -m tff_research.runtime.check_install`: is the pinned stack sound?

`pip check` may complain only about TFF's jax/jaxlib==0.4.14 pin (0.4.14 is not
served by the registry; 0.4.13 is installed instead, see BUILD_NOTES.md).
"""
from __future__ import annotations

import subprocess
import sys

EXPECTED_COMPLAINTS = ("requirement jax==0.4.14", "requirement jaxlib==0.4.14")


def unexpected_pip_check_lines() -> list[str]:
  result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
  lines = [line for line in result.stdout.splitlines() if line.strip() and "No broken requirements" not in line]
  return [line for line in lines if not any(e in line for e in EXPECTED_COMPLAINTS)]


def main() -> int:
  bad = unexpected_pip_check_lines()
  if bad:
    print("pip check found problems beyond the documented jax pin:\n  " + "\n  ".join(bad))
    return 1
  from tff_research.runtime.workers import find_worker_binary  # pylint: disable=g-import-not-at-top
  find_worker_binary()
  print("install ok: pip check reports only TFF's documented jax/jaxlib 0.4.14 pin")
  return 0


if __name__ == "__main__":
  sys.exit(main())
