"""Paper reproductions: analysis logic, the centralized baseline, and every experiment at --scale=smoke."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tff_research.papers import adaptive_optimizers
from tff_research.papers import adaptive_optimizers_char
from tff_research.papers import common
from tff_research.papers import fedavg_vs_fedsgd
from tff_research.papers import fedavg_vs_fedsgd_char
from tff_research.papers import report
from tff_research.papers import runner


def _write_curve(run_dir, curve):
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, "metrics.csv"), "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["key", "round", "eval/accuracy"])
    for round_num, value in curve:
      writer.writerow([round_num, round_num, value])


def _runs_with_curves(tmp_path, curves):
  """Result rows of FedSGD/FedAvg runs whose metrics.csv hold `curves` ({label: [(round, accuracy)]})."""
  rows = []
  for label, curve in curves.items():
    _write_curve(str(tmp_path / "runs" / label), curve)
    rows.append({"label": label, "algorithm": label.split("_")[0], "epochs": 1, "batch_size": 4,
                 "rounds": curve[-1][0], "server_lr": 1.0, "train_seconds": 1.0, "unigram_accuracy": 0.03})
  return rows


def test_rounds_to_target_is_the_first_evaluated_round_at_or_above_it():
  curve = [(5, 0.01), (10, 0.03), (15, 0.02), (20, 0.05)]
  assert fedavg_vs_fedsgd.rounds_to_target(curve, 0.03) == 10
  assert fedavg_vs_fedsgd.rounds_to_target(curve, 0.05) == 20
  assert fedavg_vs_fedsgd.rounds_to_target(curve, 0.06) is None


def test_fedsgd_analysis_picks_a_target_every_run_reached_and_the_speedup(tmp_path):
  curves = {"fedsgd": [(5, 0.00), (10, 0.01), (15, 0.032)],
            "fedavg_E1_B4": [(5, 0.034), (10, 0.05)]}
  analysis = fedavg_vs_fedsgd.analyze(_runs_with_curves(tmp_path, curves), str(tmp_path))
  assert analysis["target_accuracy"] == pytest.approx(0.032)
  table = {t["label"]: t for t in analysis["table"]}
  assert table["fedsgd"]["rounds_to_target"] == 15
  assert table["fedavg_E1_B4"]["rounds_to_target"] == 5
  assert table["fedavg_E1_B4"]["speedup_vs_fedsgd"] == pytest.approx(3.0)


def test_when_fedsgd_never_learns_the_speedup_is_a_lower_bound_over_its_budget(tmp_path):
  curves = {"fedsgd": [(10, 0.0), (20, 0.0)],
            "fedavg_a": [(5, 0.0), (10, 0.021), (15, 0.03)],
            "fedavg_b": [(5, 0.0), (10, 0.0)]}
  analysis = fedavg_vs_fedsgd.analyze(_runs_with_curves(tmp_path, curves), str(tmp_path))
  assert analysis["target_is_fedavg_only"] and analysis["target_accuracy"] == pytest.approx(0.03)
  table = {t["label"]: t for t in analysis["table"]}
  assert table["fedsgd"]["rounds_to_target"] is None and table["fedavg_b"]["rounds_to_target"] is None
  assert table["fedavg_a"]["rounds_to_target"] == 15
  assert table["fedavg_a"]["speedup_vs_fedsgd"] == pytest.approx(20 / 15)
  assert table["fedavg_a"]["speedup_is_lower_bound"]
  assert "lower bound" in report.fedavg_vs_fedsgd_markdown(
      {"analysis": analysis, "experiment": "fedavg_vs_fedsgd"})


def test_adaptive_grid_is_centred_on_the_paper_learning_rates():
  grid = adaptive_optimizers.plan_grid("paper")
  adam = sorted(r.config.server_learning_rate for r in grid if r.config.server_optimizer == "adam")
  assert adam == pytest.approx([10 ** -2.5, 10 ** -2, 10 ** -1.5])
  assert all(r.config.client_learning_rate == pytest.approx(10 ** -0.5) for r in grid)
  assert {r.config.server_optimizer for r in grid} == set(adaptive_optimizers.OPTIMIZERS)
  rows = [{"server_optimizer": "adam", "lr_vs_paper": "10^-0.5", "final_accuracy": 0.02},
          {"server_optimizer": "adam", "lr_vs_paper": "10^+0.5", "final_accuracy": 0.05},
          {"server_optimizer": "sgd", "lr_vs_paper": "10^+0.0", "final_accuracy": 0.01}]
  assert adaptive_optimizers.best_exponents(rows) == {"adam": 0.5, "sgd": 0.0}


def test_char_experiments_use_the_papers_settings():
  reddi = {r.label: r.config for r in adaptive_optimizers_char.plan("paper")}
  assert reddi["adagrad"].server_learning_rate == pytest.approx(10 ** -0.5)
  assert reddi["adagrad"].server_epsilon == pytest.approx(0.1) and reddi["adagrad"].server_initial_accumulator == 0
  assert reddi["yogi"].server_learning_rate == pytest.approx(0.01) and reddi["yogi"].server_epsilon == 1e-3
  assert reddi["sgdm"].server_momentum == 0.9 and reddi["sgd"].server_learning_rate == 1.0
  for config in reddi.values():
    assert (config.task, config.clients_per_round, config.client_batch_size, config.client_epochs,
            config.client_learning_rate, config.rounds, config.shakespeare_unit) == (
                "next_char", 10, 4, 1, 1.0, 300, "speech")
  mcmahan = {r.label: r.config for r in fedavg_vs_fedsgd_char.plan("paper", 1154)}
  assert {c.clients_per_round for c in mcmahan.values()} == {115}  # C = 0.1
  assert {c.shakespeare_unit for c in mcmahan.values()} == {"line"}
  assert mcmahan["lines_fedsgd"].algorithm == "fedsgd" and mcmahan["lines_fedsgd"].server_learning_rate == 1.47
  e5, e1 = mcmahan["lines_fedavg_e5_b10"], mcmahan["lines_fedavg_e1_b10"]
  assert (e5.client_epochs, e5.client_batch_size, e5.rounds, e5.eval_every) == (5, 10, 80, 5)
  assert (e1.client_learning_rate, e1.rounds, mcmahan["lines_fedsgd"].eval_every) == (1.47, 300, 10)
  assert len(fedavg_vs_fedsgd_char.plan("full", 1154)) == 9  # three learning rates


def _write_metrics(run_dir, rows):
  """metrics.csv with columns round, eval/accuracy, train/loss (None leaves a cell empty)."""
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, "metrics.csv"), "w", encoding="utf-8") as f:
    f.write("round,eval/accuracy,train/loss\n")
    f.writelines(f"{r},{'' if a is None else a},{'' if loss is None else loss}\n" for r, a, loss in rows)


def test_char_fedsgd_rate_comes_from_a_pilot_on_training_loss(tmp_path):
  """Every pilot rate runs the pilot's rounds; the lowest second-half training loss gets FedSGD's budget."""
  before = {r.label: r for r in fedavg_vs_fedsgd_char.plan("paper", 1154, str(tmp_path))}
  pilots = ["lines_fedsgd", "lines_fedsgd_lr0.68", "lines_fedsgd_lr0.32"]
  assert [label for label in before if "fedsgd" in label] == pilots
  assert {before[label].config.rounds for label in pilots} == {20}
  assert before["lines_fedsgd_lr0.32"].config.server_learning_rate == pytest.approx(1.47 * 10 ** (-2 / 3))
  # Round 1-10 losses do not count; rounds 11-20 do (the 0.68 rate wins there).
  losses = {"lines_fedsgd": [9.0] * 10 + [6.0] * 10, "lines_fedsgd_lr0.68": [4.0] * 10 + [3.0] * 10,
            "lines_fedsgd_lr0.32": [2.0] * 10 + [3.5] * 10}
  for label, values in list(losses.items())[:2]:
    _write_metrics(str(tmp_path / "runs" / label), [(r, None, v) for r, v in enumerate(values, 1)])
  assert fedavg_vs_fedsgd_char.choose_fedsgd_exponent("paper", str(tmp_path)) is None  # one pilot not run yet
  label, values = list(losses.items())[2]
  _write_metrics(str(tmp_path / "runs" / label), [(r, None, v) for r, v in enumerate(values, 1)])
  assert fedavg_vs_fedsgd_char.choose_fedsgd_exponent("paper", str(tmp_path)) == pytest.approx(-1 / 3)
  after = {r.label: r for r in fedavg_vs_fedsgd_char.plan("paper", 1154, str(tmp_path))}
  assert after["lines_fedsgd_lr0.68"].config.rounds == 300 and after["lines_fedsgd_lr0.68"].params["pilot"] == "chosen"
  assert after["lines_fedsgd"].config.rounds == 20 and after["lines_fedsgd"].params["pilot"] == "pilot only"
  assert fedavg_vs_fedsgd_char.pilot_loss(str(tmp_path), "lines_fedsgd", 30) == float("inf")


def test_rounds_to_a_target_raw_and_on_the_interpolated_best_so_far_curve():
  curve = [(5, 0.50), (10, 0.53), (12, 0.52), (14, 0.55), (16, 0.51)]
  assert common.best_so_far(curve) == [(5, 0.50), (10, 0.53), (12, 0.53), (14, 0.55), (16, 0.55)]
  assert common.rounds_to(curve, 0.54) == 14
  # Best so far 0.53 at round 12, 0.55 at 14: 0.54 is halfway.
  assert common.rounds_to_interpolated(curve, 0.54) == pytest.approx(13.0)
  assert common.rounds_to_interpolated(curve, 0.515) == pytest.approx(7.5)
  assert common.rounds_to_interpolated(curve, 0.50) is None  # there at the first evaluation
  assert common.rounds_to(curve, 0.56) is None and common.rounds_to_interpolated(curve, 0.56) is None


def test_char_fedavg_stops_10_rounds_after_54_and_evaluates_densely_near_it(tmp_path):
  runs = str(tmp_path / "runs")
  _write_metrics(os.path.join(runs, "lines_fedavg_e5_b10"),
                 [(10, 0.40, 2.0), (20, 0.505, 1.8), (22, 0.53, 1.7), (24, 0.545, 1.6), (30, 0.55, 1.5)])
  _write_metrics(os.path.join(runs, "lines_fedavg_e1_b10"), [(10, 0.30, 2.5), (20, 0.50, 2.2)])
  planned = {r.label: r for r in fedavg_vs_fedsgd_char.plan("paper", 1154, str(tmp_path))}
  e5, e1 = planned["lines_fedavg_e5_b10"], planned["lines_fedavg_e1_b10"]
  assert (e5.config.rounds, e5.config.eval_every, e5.params["stop"]) == (34, 2, "54 % + 10 rounds")
  assert (e1.config.rounds, e1.config.eval_every, e1.params.get("stop")) == (300, 5, None)
  assert not [label for label in planned if "_lr" in label and "fedavg" in label]


def test_char_fedavg_plateau_stops_the_run_and_starts_the_neighbouring_rates(tmp_path):
  """E = 5's window is 20 rounds: best 52.0 % at 40, 52.3 % at 60 (< 0.5 points) is a plateau at 60."""
  curve = [(10, 0.45, 2.0), (20, 0.50, 1.8), (30, 0.515, 1.7), (40, 0.52, 1.6), (50, 0.521, 1.5),
           (60, 0.523, 1.4)]
  assert fedavg_vs_fedsgd_char.plateau_round([(r, a) for r, a, _ in curve], 20) == 60
  assert fedavg_vs_fedsgd_char.plateau_round([(r, a) for r, a, _ in curve[:5]], 20) is None  # 0.6 points by 50
  _write_metrics(str(tmp_path / "runs" / "lines_fedavg_e5_b10"), curve)
  planned = {r.label: r for r in fedavg_vs_fedsgd_char.plan("paper", 1154, str(tmp_path))}
  e5 = planned["lines_fedavg_e5_b10"]
  assert (e5.config.rounds, e5.params["stop"], e5.config.eval_every) == (60, "plateau at round 60", 2)
  up, down = planned["lines_fedavg_e5_b10_lr2.16"], planned["lines_fedavg_e5_b10_lr1.00"]
  assert up.config.client_learning_rate == pytest.approx(1.47 * 10 ** (1 / 6))
  assert down.config.client_learning_rate == pytest.approx(1.47 * 10 ** (-1 / 6))
  assert (up.config.rounds, up.config.client_epochs, up.params["neighbour_of"]) == (80, 5, "lines_fedavg_e5_b10")
  # A neighbour that plateaus stops too, and starts no rates of its own.
  _write_metrics(str(tmp_path / "runs" / "lines_fedavg_e5_b10_lr2.16"), curve)
  again = {r.label: r for r in fedavg_vs_fedsgd_char.plan("paper", 1154, str(tmp_path))}
  assert again["lines_fedavg_e5_b10_lr2.16"].config.rounds == 60 and len(again) == len(planned)


def test_char_fedsgd_analysis_reports_rounds_to_54_and_to_fedsgds_best(tmp_path):
  curves = {"fedsgd": [(10, 0.20), (20, 0.3071), (30, 0.29)], "fedavg_e1_b10": [(5, 0.25), (10, 0.32)],
            "fedavg_e5_b10": [(5, 0.31), (10, 0.50), (12, 0.58)]}
  rows = []
  for label, curve in curves.items():
    _write_curve(str(tmp_path / "runs" / label), curve)
    rows.append({"label": label, "method": label, "epochs": 5 if "e5" in label else 1, "batch_size": 10,
                 "learning_rate": 1.47,
                 "rounds": curve[-1][0], "planned_rounds": 100, "final_accuracy": curve[-1][1],
                 "train_seconds": 1.0, "unigram_accuracy": 0.17})
  analysis = fedavg_vs_fedsgd_char.analyze(rows, str(tmp_path))
  assert analysis["second_target"] == pytest.approx(0.307)  # FedSGD's best, not its last
  table = {t["label"]: t for t in analysis["table"]}
  assert table["fedavg_e5_b10"]["rounds_to_54"] == 12 and table["fedsgd"]["rounds_to_54"] is None
  assert table["fedavg_e5_b10"]["rounds_to_54_interpolated"] == pytest.approx(11.0)
  assert table["fedavg_e5_b10"]["rounds_to_fedsgd_best"] == 5
  assert table["fedavg_e5_b10"]["rounds_to_fedsgd_best_interpolated"] is None
  fedsgd_rounds = 10 + (0.307 - 0.20) / (0.3071 - 0.20) * 10
  assert table["fedsgd"]["rounds_to_fedsgd_best_interpolated"] == pytest.approx(fedsgd_rounds)
  e1_rounds = 5 + (0.307 - 0.25) / (0.32 - 0.25) * 5
  assert table["fedavg_e1_b10"]["speedup_at_fedsgd_best"] == pytest.approx(fedsgd_rounds / e1_rounds)
  assert not table["fedavg_e1_b10"]["speedup_is_lower_bound"]
  # FedAvg E=5 was there by its first evaluation: its speed-up is a lower bound.
  assert table["fedavg_e5_b10"]["speedup_at_fedsgd_best"] == pytest.approx(fedsgd_rounds / 5)
  assert table["fedavg_e5_b10"]["speedup_is_lower_bound"] and table["fedsgd"]["speedup_at_fedsgd_best"] is None
  markdown = report.fedavg_vs_fedsgd_char_markdown({"analysis": analysis})
  assert "not reached" in markdown and "| 12 (11.0) |" in markdown and "| <= 5 |" in markdown
  assert f"| >= {fedsgd_rounds / 5:.3g}x |" in markdown
  named = report._labelled_curves({"experiment": "fedavg_vs_fedsgd_char", "analysis": {**analysis, "curves": curves}})
  assert list(named) == ["FedSGD, lr 1.47", "FedAvg E=1, B=10, lr 1.47", "FedAvg E=5, B=10, lr 1.47"]


class _FakeContext:
  """Records the stages `common.run_staged` asks for; each run's curve grows to the stage's round."""

  def __init__(self, out_dir, until_round=None):
    self.out_dir, self.until_round, self.stops, self.published = out_dir, until_round, [], []

  def run(self, planned, until_round=None):
    self.stops.append(until_round)
    rows = []
    for p in planned:
      done = min(p.config.rounds, until_round)
      _write_curve(os.path.join(self.out_dir, "runs", p.label), [(r, 0.1) for r in range(1, done + 1)])
      rows.append({"label": p.label, "rounds": done})
    return rows

  def publish(self, rows, analysis):
    self.published.append([r["rounds"] for r in rows])

  def log(self, line):
    pass


def test_staged_runs_advance_together_and_a_restart_skips_finished_stages(tmp_path):
  import dataclasses  # pylint: disable=g-import-not-at-top
  base = common.base_config("smoke", "next_char")
  planned = [common.PlannedRun("long", dataclasses.replace(base, rounds=60), {}),
             common.PlannedRun("short", dataclasses.replace(base, rounds=25), {})]
  context = _FakeContext(str(tmp_path), until_round=45)
  rows, _ = common.run_staged(context, planned, lambda rows: {}, stage_rounds=20)
  assert context.stops == [20, 40, 45]
  assert context.published == [[20, 20], [40, 25]]  # written after every stage but the last
  assert [r["rounds"] for r in rows] == [45, 25]
  again = _FakeContext(str(tmp_path))
  common.run_staged(again, planned, lambda rows: {}, stage_rounds=20)
  assert again.stops == [60]  # both runs are past 40: nothing before the next unfinished stage


def test_a_replanned_stage_runs_only_what_changed(tmp_path):
  """After every stage the plan is read again: a run added then starts at stage 1, finished runs are not rerun."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  base = common.base_config("smoke", "next_char")
  first = [common.PlannedRun("a", dataclasses.replace(base, rounds=40), {}),
           common.PlannedRun("b", dataclasses.replace(base, rounds=10), {})]
  later = first + [common.PlannedRun("c", dataclasses.replace(base, rounds=20), {})]
  context = _FakeContext(str(tmp_path))
  ran = []
  real_run = context.run
  context.run = lambda planned, until_round=None: ran.append([p.label for p in planned]) or real_run(
      planned, until_round)
  rows, _ = common.run_staged(context, first, lambda rows: {}, stage_rounds=10,
                              replan=lambda: later if common.completed_rounds(str(tmp_path), "a") >= 20 else first)
  assert context.stops == [10, 20, 10, 20, 30, 40]
  assert ran == [["a", "b"], ["a"], ["c"], ["c"], ["a"], ["a"]]
  assert [r["rounds"] for r in rows] == [40, 10, 20]


def test_a_finished_run_is_read_back_from_its_result_without_checkpoints(tmp_path, monkeypatch):
  """A fresh clone has metrics and result.json but no checkpoints: the run is not trained again."""
  import dataclasses  # pylint: disable=g-import-not-at-top

  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  base = dataclasses.replace(common.base_config("smoke"), rounds=5)
  run = common.PlannedRun("done", base, {"mode": "none"})
  config = dataclasses.replace(base, output_dir=str(tmp_path / "runs"), experiment_name="done")
  os.makedirs(config.run_dir)
  row = {"label": "done", "mode": "none", "rounds": 5, "final_accuracy": 0.25, "final_perplexity": float("nan")}
  common.write_finished_row(config, run, row)

  def must_not_train(*args, **kwargs):
    raise AssertionError("a finished run was trained again")
  monkeypatch.setattr(experiment, "run_experiment", must_not_train)
  (read,) = common.run_planned([run], data=None, out_dir=str(tmp_path), log=lambda line: None)
  assert read["final_accuracy"] == 0.25 and read["rounds"] == 5
  # Other settings, other parameters or a longer budget: the saved row is not this run's result.
  for changed in (common.PlannedRun("done", dataclasses.replace(base, client_learning_rate=0.25), run.params),
                  common.PlannedRun("done", base, {"mode": "central"}),
                  common.PlannedRun("done", dataclasses.replace(base, rounds=9), run.params)):
    assert common.finished_row(dataclasses.replace(changed.config, output_dir=config.output_dir,
                                                   experiment_name="done"), changed) is None
  # A stage's stop (until_round) does not change the settings it was saved with.
  assert common.finished_row(dataclasses.replace(config, rounds=3), run) is not None


def test_mean_std_ignores_nan():
  assert common.mean_std([0.1, 0.3, float("nan")]) == (pytest.approx(0.2), pytest.approx(0.1414, abs=1e-4))
  assert common.mean_std([0.5]) == (0.5, 0.0)


@pytest.fixture(scope="module")
def tiny_data(shakespeare_dir):
  import dataclasses  # pylint: disable=g-import-not-at-top

  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(common.SMOKE_BASE, data_dir=shakespeare_dir)
  return config, experiment.load_nwp_data(config, verbose=False)


def test_centralized_training_sees_exactly_the_requested_examples(tiny_data):
  from tff_research.learning import centralized  # pylint: disable=g-import-not-at-top
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  config, data = tiny_data
  result = centralized.train_centralized(experiment.model_config(config, data.vocab.size), data, examples=37,
                                         batch_size=8)
  assert result.examples_seen == 37
  assert result.steps == 5  # 8 + 8 + 8 + 8 + 5
  assert np.isfinite(result.final_train_loss)


def test_central_evaluation_equals_federated_evaluation_of_the_same_weights(tiny_data):
  from tff_research.data import nwp  # pylint: disable=g-import-not-at-top
  from tff_research.learning import centralized  # pylint: disable=g-import-not-at-top
  from tff_research.learning import evaluation  # pylint: disable=g-import-not-at-top
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  from tff_research.learning import model_fn as model_fn_lib  # pylint: disable=g-import-not-at-top
  config, data = tiny_data
  model_config = experiment.model_config(config, data.vocab.size)
  model = centralized.train_centralized(model_config, data, examples=64, batch_size=8).model
  clients = data.test_client_ids[:5]
  central = centralized.evaluate_keras_model(model, data, clients, batch_size=16)
  model_fn = model_fn_lib.build_model_fn(model_config, data.element_spec, data.vocab.special_ids,
                                        data.vocab.pad_id)
  eval_process = evaluation.build_evaluation_process(model_fn)
  state = eval_process.initialize()
  weights = eval_process.get_model_weights(state)
  weights = type(weights)(trainable=[np.asarray(v) for v in model.trainable_weights],
                          non_trainable=[np.asarray(v) for v in model.non_trainable_weights])
  datasets = data.client_datasets(clients, nwp.ClientSpec(1, 16, None, shuffle=False), split="test")
  _, federated = evaluation.evaluate(eval_process, state, weights, datasets)
  shared = set(central) & set(federated)
  assert {"accuracy", "recall_at_3", "accuracy_with_special"} <= shared
  for name in shared:
    assert central[name] == pytest.approx(federated[name], rel=1e-4, abs=1e-6), name


def test_every_experiment_runs_at_smoke_scale(tmp_path, python_env, repo_root, shakespeare_dir):
  """The README's command for all four experiments, as a subprocess: results, plots, tables."""
  out = tmp_path / "results"
  completed = subprocess.run(
      [sys.executable, "-m", "experiments.reproduce_papers", "--scale=smoke", f"--output_dir={out}",
       f"--data_dir={shakespeare_dir}"],
      cwd=repo_root, env=python_env, capture_output=True, text=True, timeout=900, check=False)
  assert completed.returncode == 0, completed.stderr[-3000:]
  results = out / "papers" / "smoke"
  summaries = report.load_summaries(str(results))
  assert list(summaries) == list(runner.EXPERIMENTS)
  for name, summary in summaries.items():
    analysis = summary["analysis"]
    assert analysis["table"], name
    for plot in analysis["plots"]:
      assert os.path.getsize(results / name / plot) > 5000, plot
    with open(results / name / "results.csv", encoding="utf-8") as f:
      rows = list(csv.DictReader(f))
    assert len(rows) == len(summary["runs"]) >= 2, name
    for row in rows:
      if row.get("final_accuracy"):
        assert 0.0 <= float(row["final_accuracy"]) <= 1.0
    text = report.markdown(summary)
    assert summary["command"] in text and "|---|" in text
  char1 = summaries["fedavg_vs_fedsgd_char"]["analysis"]
  assert [t["method"] for t in char1["table"]] == ["fedsgd", "fedsgd", "fedavg_e1_b10", "fedavg_e5_b10"]
  assert sorted(t["pilot"] or "" for t in char1["table"]) == ["", "", "chosen", "pilot only"]
  assert char1["paper"]["rounds"]["fedavg_e5_b10"] == 41
  char2 = summaries["adaptive_optimizers_char"]["analysis"]
  assert sorted(char2["ranking"]) == ["FedAdagrad", "FedAvg"]
  assert all(t["rounds"] == 2 for t in char2["table"])
  exp1 = summaries["fedavg_vs_fedsgd"]["analysis"]
  assert {t["label"] for t in exp1["table"]} >= {"fedsgd_lr1", "fedavg_E2_B2"}
  assert summaries["adaptive_optimizers"]["analysis"]["ranking"] in (["FedAvg", "FedAdam"], ["FedAdam", "FedAvg"])
  exp3 = summaries["federated_vs_centralized"]["analysis"]["table"]
  assert exp3[0]["train_examples"] == exp3[1]["train_examples"] > 0  # equal example passes
  exp4 = summaries["secure_cost"]["analysis"]["table"]
  assert [t["aggregator"] for t in exp4] == ["plain", "secure"]
  assert all(t["upload_bytes_per_client"] for t in exp4[1:])
  exp5 = summaries["privacy_utility"]["analysis"]["table"]
  assert [t["mode"] for t in exp5] == ["none", "central", "ftrl", "distributed"]
  # Calibrated to 8 at the fewest survivors; a distributed round counted with more survivors reaches less.
  assert all(7.9 <= t["epsilon"] <= 8.0 for t in exp5[1:3]) and 0 < exp5[3]["epsilon"] <= 8.0
  assert all(t["noise_multiplier"] > 0 for t in exp5[1:])
  # Publishing copies what git keeps.
  published = report.publish(str(results), str(tmp_path / "published"))
  assert any(p.endswith("summary.json") for p in published)
  assert json.load(open(tmp_path / "published" / "secure_cost" / "summary.json"))["scale"] == "smoke"


def test_unknown_scale_is_one_line(python_env, repo_root, tmp_path):
  completed = subprocess.run(
      [sys.executable, "-m", "experiments.fedavg_vs_fedsgd", "--scale=huge", f"--output_dir={tmp_path}"],
      cwd=repo_root, env=python_env, capture_output=True, text=True, timeout=120, check=False)
  assert completed.returncode != 0
  assert "Traceback" not in completed.stderr
  assert "scale" in completed.stderr


def test_report_cli_without_results_is_one_line(tmp_path, capsys):
  assert report.main([str(tmp_path)]) == 2
  assert "no experiment summary.json" in capsys.readouterr().err


@pytest.mark.parametrize("stop, code, said", [(KeyboardInterrupt(), 130, "interrupted;"),
                                              (SystemExit(143), 143, "terminated (SIGTERM);")])
def test_a_stopped_experiment_says_finished_runs_are_kept(monkeypatch, capsys, tmp_path, stop, code, said):
  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  calls = []
  monkeypatch.setattr(runtime, "use_local_runtime", lambda: calls.append("start"))
  monkeypatch.setattr(runtime, "shutdown", lambda: calls.append("shutdown"))

  def stopped(*_, **__):
    raise stop

  monkeypatch.setattr(runner, "run", stopped)
  if isinstance(stop, SystemExit):
    with pytest.raises(SystemExit) as exited:
      runner.main(["secure_cost"], "smoke", str(tmp_path), None, verbose=False)
    assert exited.value.code == code
  else:
    assert runner.main(["secure_cost"], "smoke", str(tmp_path), None, verbose=False) == code
  err = capsys.readouterr().err
  assert said in err and "finished runs are kept" in err
  assert calls == ["start", "shutdown"]
