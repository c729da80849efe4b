"""deploy/kubernetes as written: its workers run our worker entry point on the port the driver dials, and
every argument it passes is one our command lines take."""
import os
import re
import shlex

import pytest
import yaml
from absl import flags

import experiments.train_nwp  # noqa: F401  (defines the driver's flags)
from tests.conftest import REPO_ROOT
from tff_research.learning import entry_point
from tff_research.runtime import worker as worker_cli

MANIFESTS = os.path.join(REPO_ROOT, "deploy", "kubernetes")


@pytest.fixture(scope="module")
def objects():
  found = {}
  for name in sorted(os.listdir(MANIFESTS)):
    with open(os.path.join(MANIFESTS, name)) as f:
      for document in yaml.safe_load_all(f):
        assert document["apiVersion"] and document["metadata"]["name"], name
        found[(document["kind"], document["metadata"]["name"])] = document
  return found


def _one(objects, kind):
  (document,) = [d for (k, _), d in objects.items() if k == kind]
  return document


def _container(pod_spec, name):
  (container,) = [c for c in pod_spec["containers"] if c["name"] == name]
  return container


def _flag_value(args, name):
  (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
  return value


def test_workers_run_our_entry_point_on_the_port_the_service_and_probe_name(objects):
  service, workers = _one(objects, "Service"), _one(objects, "StatefulSet")
  assert service["spec"]["clusterIP"] == "None"  # headless: one DNS name per worker pod
  assert workers["spec"]["serviceName"] == service["metadata"]["name"]
  labels = workers["spec"]["template"]["metadata"]["labels"]
  assert workers["spec"]["selector"]["matchLabels"].items() <= labels.items()
  assert service["spec"]["selector"].items() <= labels.items()
  container = _container(workers["spec"]["template"]["spec"], "worker")
  assert container["command"] == [".venv/bin/python", "-m", "tff_research.runtime.worker"]
  parsed = worker_cli.build_parser().parse_args(container["args"])  # exits on an argument it does not take
  (port,) = service["spec"]["ports"]
  assert parsed.port == port["port"] == port["targetPort"] == container["ports"][0]["containerPort"]
  assert container["readinessProbe"]["tcpSocket"]["port"] == parsed.port


def test_the_driver_dials_every_worker_and_passes_only_flags_train_nwp_defines(objects):
  service, workers, job = _one(objects, "Service"), _one(objects, "StatefulSet"), _one(objects, "Job")
  pod = job["spec"]["template"]["spec"]
  driver = _container(pod, "driver")
  assert driver["command"] == [".venv/bin/python", "-m", "experiments.train_nwp"]
  for arg in driver["args"]:
    name, _, value = arg[2:].partition("=")
    flag = flags.FLAGS[name[2:] if name.startswith("no") and name[2:] in flags.FLAGS else name]
    if value:
      flag.parser.parse(value)  # raises where train_nwp would refuse the value
  port = service["spec"]["ports"][0]["port"]
  names = [f"{workers['metadata']['name']}-{i}.{service['metadata']['name']}"
           for i in range(workers["spec"]["replicas"])]
  assert _flag_value(driver["args"], "workers").split(",") == [f"{n}:{port}" for n in names]
  (wait,) = pod["initContainers"]
  assert re.findall(r"[\w.-]+\.tff-workers", wait["command"][-1]) == names and f" {port};" in wait["command"][-1]
  mounts = [m["mountPath"] for m in driver["volumeMounts"]]
  for name in ("data_dir", "output_dir"):
    assert any(_flag_value(driver["args"], name).startswith(m + "/") for m in mounts), name
  (volume,) = pod["volumes"]
  assert (("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in objects)


def test_bad_input_fails_the_job_and_a_lost_worker_reruns_it(objects):
  job = _one(objects, "Job")
  (rule,) = job["spec"]["podFailurePolicy"]["rules"]
  assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [entry_point.EXIT_USAGE]
  assert entry_point.EXIT_WORKER_LOST not in rule["onExitCodes"]["values"] and job["spec"]["backoffLimit"] > 0
  assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"  # what podFailurePolicy requires


def test_the_image_holds_the_environment_the_manifests_run(objects):
  with open(os.path.join(REPO_ROOT, "deploy", "Dockerfile")) as f:
    lines = [shlex.split(line) for line in f if line.strip() and not line.startswith("#")]
  (workdir,) = [line[1] for line in lines if line[0] == "WORKDIR"]
  assert any(line[:3] == ["RUN", "make", "setup"] for line in lines)  # .venv/bin/python under WORKDIR
  ours = [c for kind in ("StatefulSet", "Job") for c in _one(objects, kind)["spec"]["template"]["spec"]["containers"]]
  assert ours and all(c["image"].startswith("tff-research:") and c["workingDir"] == workdir for c in ours)
