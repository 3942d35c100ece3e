"""The retraining pipeline, defined once.

Each step names its job script, its inputs and outputs, its instance type and (for training) its
hyperparameters and their tuning ranges. The local runner (:mod:`local.pipeline_runner`) executes
these steps on this machine; the CDK state machine is built from the same definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.decision import DEFAULT_COSTS, DecisionCosts
from shared.gates import GateConfig
from shared.lake import DEFAULT_REPLAY_DAYS
from shared.metric_lines import metric_definitions


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter: its type, default and the range the tuner searches."""

    name: str
    kind: Literal["int", "float", "categorical"]
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[str, ...] = ()
    tunable: bool = True
    family: str | None = None  # the model family it applies to; None for all
    help: str = ""

    def parse(self, raw: Any) -> Any:
        """Turn a raw value (SageMaker passes every hyperparameter as a string) into a checked value."""
        try:
            if self.kind == "int":
                number = float(raw)
                if not number.is_integer():
                    raise ValueError
                value: Any = int(number)
            elif self.kind == "float":
                value = float(raw)
            else:
                value = str(raw)
        except (TypeError, ValueError):
            raise ValueError(f"hyperparameter {self.name}: {raw!r} is not a valid {self.kind}") from None
        if self.kind == "categorical":
            if value not in self.choices:
                raise ValueError(f"hyperparameter {self.name}: {value!r} is not one of {list(self.choices)}")
        elif (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError(f"hyperparameter {self.name}: {value} is outside [{self.low}, {self.high}]")
        return value


HYPERPARAMETERS: Final[tuple[Hyperparameter, ...]] = (
    Hyperparameter(
        "model_family",
        "categorical",
        "xgboost",
        choices=("xgboost", "random_forest", "keras"),
        help="model family to train",
    ),
    Hyperparameter(
        "class_weighting",
        "categorical",
        "none",
        choices=("none", "balanced"),
        help="'balanced' weighs the rare high-risk class up to the common one's total weight",
    ),
    # XGBoost. The defaults (what a run with no tuning trains, and the tuner's first trial) were chosen
    # on several tables, from 800 rows to 30k: generated claims, a vehicle-fraud-shaped table and the
    # public claims table (benchmarks/bench_public_table.py). Shallow trees that take every column and
    # skip splits worth less than chance generalise on small tables and lose nothing on large ones.
    Hyperparameter("xgb_max_depth", "int", 3, 2, 8, family="xgboost", help="depth of each tree"),
    Hyperparameter("xgb_eta", "float", 0.08, 0.01, 0.3, log=True, family="xgboost", help="learning rate"),
    Hyperparameter("xgb_num_round", "int", 600, 50, 1500, family="xgboost", help="maximum boosting rounds"),
    Hyperparameter("xgb_min_child_weight", "float", 2.0, 0.5, 50.0, log=True, family="xgboost"),
    Hyperparameter("xgb_subsample", "float", 0.9, 0.5, 1.0, family="xgboost"),
    Hyperparameter(
        "xgb_colsample_bytree",
        "float",
        1.0,
        0.4,
        1.0,
        family="xgboost",
        help="share of columns each tree may use (below 1, a tree can miss the few columns that matter)",
    ),
    Hyperparameter(
        "xgb_lambda", "float", 1.0, 1e-3, 20.0, log=True, family="xgboost", help="L2 regularisation"
    ),
    Hyperparameter(
        "xgb_gamma",
        "float",
        3.0,
        0.0,
        10.0,
        family="xgboost",
        help="least loss reduction a split must bring (XGBoost's gamma); XGBoost's loss change is a "
        "score statistic, about chi-square with one degree of freedom for a split that means nothing, "
        "so this prunes chance splits on small tables while real splits on large ones gain far more",
    ),
    # Random Forest
    Hyperparameter("rf_n_estimators", "int", 200, 50, 500, family="random_forest", help="number of trees"),
    Hyperparameter("rf_max_depth", "int", 14, 4, 30, family="random_forest"),
    Hyperparameter("rf_min_samples_leaf", "int", 5, 1, 100, log=True, family="random_forest"),
    Hyperparameter(
        "rf_max_features",
        "float",
        0.5,
        0.1,
        1.0,
        family="random_forest",
        help="share of columns tried at each split",
    ),
    # Keras network
    Hyperparameter("nn_units", "int", 64, 16, 256, log=True, family="keras", help="units per hidden layer"),
    Hyperparameter("nn_layers", "int", 2, 1, 3, family="keras", help="hidden layers"),
    Hyperparameter("nn_dropout", "float", 0.1, 0.0, 0.5, family="keras"),
    Hyperparameter("nn_learning_rate", "float", 1e-3, 1e-4, 1e-2, log=True, family="keras"),
    Hyperparameter("nn_batch_size", "int", 512, 64, 2048, log=True, family="keras"),
    Hyperparameter(
        "nn_epochs",
        "int",
        60,
        2,
        300,
        tunable=False,
        family="keras",
        help="maximum epochs; early stopping on validation loss ends most runs sooner",
    ),
    Hyperparameter("nn_patience", "int", 6, 1, 50, tunable=False, family="keras"),
    Hyperparameter(
        "cv_folds",
        "int",
        0,
        0,
        10,
        tunable=False,
        help="a tuning trial: score by stratified K-fold PR-AUC on the training rows, as the local "
        "tuner does, and write no model (0: fit on all rows and write the model)",
    ),
    Hyperparameter(
        "max_rows",
        "int",
        0,
        0,
        10**9,
        tunable=False,
        help="train on a stratified sample of at most this many rows (0: all); a tuning trial's budget",
    ),
    Hyperparameter(
        "xgb_memory_mb",
        "int",
        0,
        0,
        10**7,
        tunable=False,
        family="xgboost",
        help="memory the training data may take; above it XGBoost reads them batch by batch through "
        "its external-memory iterator (0: a quarter of the machine's memory)",
    ),
    # Every family
    Hyperparameter("early_stopping_rounds", "int", 40, 5, 200, tunable=False, family="xgboost"),
    Hyperparameter("seed", "int", 0, 0, 2**31 - 1, tunable=False),
    Hyperparameter(
        "cost_missed_high_risk",
        "float",
        DEFAULT_COSTS.missed_high_risk,
        1e-3,
        1e6,
        tunable=False,
        help="cost of auto-approving a high-risk claim; with the next, sets the decision threshold",
    ),
    Hyperparameter(
        "cost_needless_review",
        "float",
        DEFAULT_COSTS.needless_review,
        1e-3,
        1e6,
        tunable=False,
        help="cost of a manual review of a low-risk claim",
    ),
    Hyperparameter(
        "feature_spec",
        "categorical",
        "claims",
        choices=("claims",),
        tunable=False,
        help="built-in spec to use when the train channel carries no feature_spec.json",
    ),
)
HYPERPARAMETERS_BY_NAME: Final = {hp.name: hp for hp in HYPERPARAMETERS}

# The tuning objective and every metric the training script prints.
OBJECTIVE_METRIC: Final = "validation:pr_auc"
TRAINING_METRICS: Final[tuple[str, ...]] = (
    "validation:roc_auc",
    "validation:pr_auc",
    "validation:logloss",
    "validation:brier",
    "validation:f1",
    "validation:recall",
    "validation:precision",
    "train:roc_auc",
)
TRAINING_METRIC_DEFINITIONS: Final = metric_definitions(list(TRAINING_METRICS))


# Names SageMaker adds to a job's hyperparameters on its own: the tuner's objective
# (``_tuning_objective_metric``, and any other name with a leading underscore), and the framework
# toolkits' ``sagemaker_*`` settings and ``model_dir``. They are SageMaker's, never a typo of ours.
SAGEMAKER_RESERVED_PREFIXES: Final = ("_", "sagemaker_")
SAGEMAKER_RESERVED_NAMES: Final = frozenset({"model_dir"})


def is_reserved_hyperparameter(name: str) -> bool:
    return name.startswith(SAGEMAKER_RESERVED_PREFIXES) or name in SAGEMAKER_RESERVED_NAMES


def split_reserved(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ours, SageMaker's reserved ones)."""
    reserved = {k: v for k, v in raw.items() if is_reserved_hyperparameter(k)}
    return {k: v for k, v in raw.items() if k not in reserved}, reserved


def parse_hyperparameters(raw: dict[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with the given values, each parsed and range-checked; unknown names fail,
    except SageMaker's reserved ones, which are left out (the caller logs them)."""
    ours, _ = split_reserved(raw)
    unknown = sorted(set(ours) - set(HYPERPARAMETERS_BY_NAME))
    if unknown:
        raise ValueError(f"unknown hyperparameters: {unknown}")
    values = {hp.name: hp.default for hp in HYPERPARAMETERS}
    for name, value in ours.items():
        values[name] = HYPERPARAMETERS_BY_NAME[name].parse(value)
    return values


StepKind = Literal["processing", "tuning", "training", "gates", "register", "deploy", "notify"]
JOB_KINDS: Final = frozenset({"processing", "tuning", "training"})


@dataclass(frozen=True)
class JobResources:
    """Where one SageMaker job runs: a processing job's ``ClusterConfig`` or a training job's
    ``ResourceConfig``. Each stage sets its own in cdk/config.py."""

    instance_type: str
    instance_count: int = 1
    volume_gb: int = 30

    def __post_init__(self) -> None:
        # botocore's sagemaker model: ProcessingInstanceCount 1 to 100, ProcessingVolumeSizeInGB 1 to 16384.
        if not 1 <= self.instance_count <= 100:
            raise ValueError(f"instance count must be 1 to 100, not {self.instance_count}")
        if not 1 <= self.volume_gb <= 16384:
            raise ValueError(f"volume size must be 1 to 16384 GB, not {self.volume_gb}")


@dataclass(frozen=True)
class Step:
    """One step of the pipeline and the job that runs it."""

    name: str
    kind: StepKind
    # Jobs: the script, run as ``python -m <module>`` locally and in the SageMaker container.
    # Tasks: the domain module whose functions the local runner (and the AWS task) call.
    module: str
    description: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    instance_type: str  # a job's type when no stage sets one (cdk/config.py does for AWS)
    arguments: tuple[str, ...] = ()
    metric_names: tuple[str, ...] = field(default_factory=tuple)
    optional_inputs: tuple[str, ...] = ()
    # Command-line flags of the job filled from the run's inputs: (flag, PipelineInputs field).
    input_arguments: tuple[tuple[str, str], ...] = ()
    # A step that can say "stop": where the run goes when it does (a Choice state in AWS).
    on_stop_next: str | None = None
    # Inputs the job can read shard by shard, each instance its own share of the S3 objects
    # (ShardedByS3Key). Empty: the job needs all of its data on one instance, for the reason given.
    # None is yet. Checked against the drift job's map/reduce (shared/drift_jobs.py), which works
    # because its figures are sums of per-shard counts merged by one reduce:
    # - validate: a row's split is its split key against per-class cut-offs over every row, and a
    #   repeated claim id may sit in another file. Sharded, that is a map (check rows, emit keys and
    #   ids), a global step (cut-offs, repeats) and a second map placing each row: three phases and
    #   two reads of the data, where one instance does it in about 9 us a claim (README, Scaling).
    #   Its quality report and data hash, read by the gates and the lineage, are of the whole input.
    # - features: it screens a seeded sample of at most 100,000 training rows, so its work does not
    #   grow with the data; its univariate ROC-AUC is a rank statistic, not a sum of shard counts, and
    #   its encoder's frequent levels and informative tokens are chosen over the whole sample.
    shardable_inputs: tuple[str, ...] = ()
    why_one_instance: str = ""

    def check_resources(self, resources: JobResources) -> None:
        """A job that cannot work on a shard runs on one instance: more would each redo (or half-do)
        the whole job and overwrite each other's outputs."""
        if resources.instance_count > 1 and not self.shardable_inputs:
            raise ValueError(
                f"step {self.name} cannot run on {resources.instance_count} instances: "
                f"{self.why_one_instance or 'it reads no input shard by shard'}"
            )

    @property
    def is_job(self) -> bool:
        """A SageMaker job (processing, tuning, training) rather than a task of the orchestrator."""
        return self.kind in JOB_KINDS


STEPS: Final[tuple[Step, ...]] = (
    Step(
        name="validate",
        kind="processing",
        module="sagemaker_jobs.processing.validate",
        description="check raw claims against the schema and business rules; split train/validation/test",
        inputs=("raw",),
        outputs=("train", "validation", "test", "rejected", "quality", "monitor_baseline"),
        instance_type="ml.m5.xlarge",
        input_arguments=(("--spec", "spec"), ("--seed", "seed"), ("--source", "source")),
        why_one_instance="it needs every row at once: claim ids repeated across files, one stratified "
        "split, one data hash and one quality report for the gates",
    ),
    Step(
        name="features",
        kind="processing",
        module="sagemaker_jobs.processing.features",
        description="build the model inputs from the spec; screen them for target leakage and for "
        "proxies of protected attributes",
        inputs=("train", "validation"),
        outputs=("features",),
        instance_type="ml.m5.xlarge",
        why_one_instance="it fits one encoder on the whole training split (one object) and screens a "
        "sample of at most 100,000 rows",
    ),
    Step(
        name="tune",
        kind="tuning",
        module="sagemaker_jobs.training.train",
        description="search model families and hyperparameters (Bayesian) for the best PR-AUC",
        inputs=("train", "validation"),
        outputs=("hyperparameters",),
        instance_type="ml.m5.xlarge",
        metric_names=TRAINING_METRICS,
        # Tuning scales out by running trials in parallel (MaxParallelTrainingJobs), one instance each.
        why_one_instance="each trial is one train.py run, which fits in one process (see train)",
    ),
    Step(
        name="train",
        kind="training",
        module="sagemaker_jobs.training.train",
        description="fit the best configuration on all training rows; calibrate; choose the threshold",
        inputs=("train", "validation", "test", "hyperparameters"),
        outputs=("model",),
        instance_type="ml.m5.xlarge",
        metric_names=TRAINING_METRICS,
        # XGBoost can train across instances on sharded data, but only with a collective (tracker)
        # joining the hosts, which SageMaker's built-in XGBoost image sets up and our script does not;
        # scikit-learn's forest and our Keras network have no multi-host mode at all.
        why_one_instance="train.py fits every family in one process, with no collective across hosts",
    ),
    Step(
        name="evaluate",
        kind="processing",
        module="sagemaker_jobs.processing.evaluate",
        description="test metrics, cost threshold against 0.5, calibration, importance, fairness, "
        "cross-validation, out-of-time check",
        inputs=("model", "train", "validation", "test", "features"),
        # tuning: the local tuner's trials.json, for the report's tuning budget (local runs only, as
        # truth; in AWS the tuning job enforces its own MaxRuntimeInSeconds).
        optional_inputs=("champion", "truth", "tuning"),
        outputs=("evaluation",),
        instance_type="ml.m5.xlarge",
        metric_names=tuple(f"test:{m}" for m in ("roc_auc", "pr_auc", "f1", "brier", "expected_cost")),
        input_arguments=(("--cv-folds", "cv_folds"), ("--seed", "seed"), ("--replay-days", "replay_days")),
        why_one_instance="its metrics (ROC-AUC, calibration, fairness) are over the whole test split "
        "and its cross-validation refits on every row",
    ),
    Step(
        name="gates",
        kind="gates",
        module="shared.gates",
        description="data quality floor, metric floors, challenger against champion, fairness bound",
        inputs=("quality", "evaluation"),
        outputs=("decision",),
        instance_type="lambda",
        on_stop_next="notify",
    ),
    Step(
        name="register",
        kind="register",
        module="shared.promotion",
        description="record the version with params, metrics, report, data hash and code version",
        inputs=("model", "evaluation", "decision", "quality"),
        outputs=("registration",),
        instance_type="lambda",
    ),
    Step(
        name="deploy",
        kind="deploy",
        module="shared.promotion",
        description="serve the new version (guarded blue/green in AWS), then move the champion alias",
        inputs=("model", "registration"),
        outputs=("deployment",),
        instance_type="ml.m5.large",
    ),
    Step(
        name="notify",
        kind="notify",
        module="shared.promotion",
        description="tell on-call and the model owners what the run did, and why",
        inputs=(),
        outputs=(),
        instance_type="lambda",
    ),
)


class PipelineInputs(BaseModel):
    """What a run takes; every field has a default, so an empty input ``{}`` starts a full run."""

    model_config = ConfigDict(extra="forbid")

    spec: str = Field(default="claims", description="built-in spec name or spec JSON path")
    # A container argument: botocore's ContainerArgument is at most 256 characters matching ".*"
    # (one line), so the query must be too.
    source: str = Field(
        default="",
        max_length=256,
        description="raw claims from the claims lake, athena:<query> or glue:<table> (one line, at most "
        "256 characters); empty: the raw files (the data bucket's raw/ prefix, or --data locally)",
    )
    tuning_trials: int = Field(
        default=20, ge=0, le=500, description="0 skips the search: XGBoost with its defaults"
    )
    tuning_timeout_s: float = Field(default=480.0, gt=0, description="wall-clock budget of the tuning step")
    tuning_folds: int = Field(default=3, ge=2, le=10)
    tuning_max_rows: int = Field(default=40_000, ge=500, description="rows sampled for trials")
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="overrides for the final training"
    )
    cv_folds: int = Field(
        default=5, ge=0, le=10, description="stratified folds of the evaluation; 0 skips it"
    )
    replay_days: int = Field(
        default=DEFAULT_REPLAY_DAYS,
        ge=0,
        le=90,
        description="days of captured traffic the evaluation replays; 0: none",
    )
    costs: DecisionCosts = Field(
        default_factory=DecisionCosts, description="costs that set the decision threshold"
    )
    gates: GateConfig = Field(
        default_factory=GateConfig,
        description="what a challenger must pass: the defaults, then the spec's gates section, then "
        "gates.overrides, this run's settings by name (--gate name=value); the gates step applies them",
    )
    seed: int = 0
    model_package_arn: str | None = Field(
        default=None,
        pattern=r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:model-package/[\w-]+/\d+$",
        description="AWS only: deploy this approved model package version (of the stack's registry) "
        "instead of training one: the endpoint gets it with capture, autoscaling and guardrails",
    )

    @field_validator("source")
    @classmethod
    def _lake_source(cls, value: str) -> str:
        if value and (not value.startswith(("athena:", "glue:")) or not value.split(":", 1)[1].strip()):
            raise ValueError(f"a lake source is athena:<query> or glue:<table>, not {value[:40]!r}")
        if any(c in value for c in "\r\n"):
            raise ValueError("a lake source is one line (SageMaker passes it as a container argument)")
        return value

    def training_hyperparameters(self, chosen: dict[str, Any]) -> dict[str, Any]:
        """The final training's hyperparameters: the tuner's choice, the run's seed and costs, overrides."""
        return {
            **chosen,
            "seed": self.seed,
            "cost_missed_high_risk": self.costs.missed_high_risk,
            "cost_needless_review": self.costs.needless_review,
            **self.hyperparameters,
        }


def job_arguments(step: Step, inputs: PipelineInputs) -> list[str]:
    """The job's command line for this run: the step's fixed arguments plus those taken from the inputs."""
    arguments = list(step.arguments)
    for flag, name in step.input_arguments:
        arguments += [flag, str(getattr(inputs, name))]
    return arguments


def step_names() -> list[str]:
    return [step.name for step in STEPS]


def step(name: str) -> Step:
    for candidate in STEPS:
        if candidate.name == name:
            return candidate
    raise KeyError(name)


def job_resources(stage: Mapping[str, JobResources] | None = None) -> dict[str, JobResources]:
    """Every job step's resources: the stage's (cdk/config.py), else the step's instance type on one
    instance. A name that is no job step, or more instances than a step can use, fails."""
    jobs = {s.name: s for s in STEPS if s.is_job}
    unknown = sorted(set(stage or {}) - set(jobs))
    if unknown:
        raise ValueError(f"no job steps named {unknown}: the job steps are {sorted(jobs)}")
    chosen = {name: (stage or {}).get(name, JobResources(s.instance_type)) for name, s in jobs.items()}
    for name, resources in chosen.items():
        jobs[name].check_resources(resources)
    return chosen


def static_hyperparameters(inputs: PipelineInputs) -> dict[str, str]:
    """What every training job of a run gets besides the tuned values, as the strings SageMaker
    passes: the fixed settings, the run's seed and its decision costs."""
    fixed = {hp.name: str(hp.default) for hp in HYPERPARAMETERS if not hp.tunable}
    return {
        **fixed,
        "seed": str(inputs.seed),
        "cost_missed_high_risk": str(inputs.costs.missed_high_risk),
        "cost_needless_review": str(inputs.costs.needless_review),
    }


def trial_hyperparameters(inputs: PipelineInputs) -> dict[str, str]:
    """A tuning trial's fixed values: the run's, scored by ``tuning_folds``-fold cross-validation on
    a sample of at most ``tuning_max_rows`` rows, as the local tuner scores its trials."""
    return {
        **static_hyperparameters(inputs),
        "max_rows": str(inputs.tuning_max_rows),
        "cv_folds": str(inputs.tuning_folds),
    }


# SageMaker's bounds on a tuning job's ResourceLimits (botocore's sagemaker model:
# MaxNumberOfTrainingJobs >= 1, MaxRuntimeInSeconds in [120, 15768000]).
TUNING_MIN_RUNTIME_S: Final = 120
TUNING_MAX_PARALLEL: Final = 2


def prepare_run(raw: dict[str, Any]) -> dict[str, Any]:
    """A run's input as the state machine receives it, checked and completed before any job starts:
    every default filled (nested ones too), the hyperparameters as SageMaker's strings. A bad input
    (an unknown field, a typo in a hyperparameter) fails here, before anything is paid for."""
    inputs = PipelineInputs.model_validate(raw)
    overrides = {name: str(value) for name, value in inputs.hyperparameters.items()}
    parse_hyperparameters(overrides)  # a typo or a value out of range fails the run now
    return {
        "inputs": inputs.model_dump(mode="json"),
        "static_hyperparameters": static_hyperparameters(inputs),
        "trial_hyperparameters": trial_hyperparameters(inputs),
        "hyperparameter_overrides": overrides,
        "tuning": {
            "max_runtime_s": max(TUNING_MIN_RUNTIME_S, int(-(-inputs.tuning_timeout_s // 1))),
            "max_parallel": max(1, min(TUNING_MAX_PARALLEL, inputs.tuning_trials)),
        },
    }
