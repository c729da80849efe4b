"""The (k, t) settings the parameter check accepts, for the release sweeps."""
from tff_research.aggregation.secagg import params


def accepted_parameters(n: int, threat: params.ThreatModel, every_t: bool = True) -> list[params.SecAggParameters]:
  """Every safe k `choose_parameters` accepts at n, with every safe t or the two ends and the default."""
  out = []
  for k in list(range(2, n - 1, 2)) + [n - 1]:
    try:
      p = params.choose_parameters(n, threat, neighbors=k)
    except ValueError:
      continue
    ts = (range(p.min_threshold, p.max_threshold + 1) if every_t
          else sorted({p.min_threshold, p.threshold, p.max_threshold}))
    out.extend(params.choose_parameters(n, threat, neighbors=k, threshold=t) for t in ts)
  return out
