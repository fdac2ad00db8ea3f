"""Train, evaluate and deploy a small classifier, written as software-defined assets.

What this example shows:
  - a chain of assets whose values flow by parameter name (`features(raw_digits)`);
  - a blocking check (`no_nulls`): if the raw data is bad, nothing downstream runs;
  - a non-blocking check (`accuracy_above_90pct`): a warning on the run, not a stop;
  - step options: `retries`, `timeout` and `memory_limit` on the training step;
  - logging (`context.log`) and metadata (`context.add_metadata`) shown in the UI;
  - typed run config: `trained_model` takes a `TrainConfig`, filled from the run's params
    (`--param C=0.5`) and checked before the run is recorded (`--param C=fast` is refused);
  - a resource: `model_store`, where models are deployed, defined once and handed to the
    assets that name it (its folder comes from `[resources.model_store]` in dagtop.toml, else
    it is `models` in `context.shared_dir`, a folder every Dask worker reaches;
    a test passes `resources={"model_store": ...}`); deploying is atomic and happens only
    when the new model beats the one already deployed, so re-running the pipeline is safe.
  - retraining when new data lands: everything after `raw_digits` is `Auto.eager()`, so with
    an engine up (`dagtop daemon` or the UI), each new `raw_digits` (by hand, a schedule or a
    sensor) makes the engine's `auto` sensor request one run of features, trained_model,
    evaluation and deployed, in that order (`dagtop runs` says why: "features: upstream
    raw_digits updated at 09:01; then trained_model, evaluation, deployed"). `dagtop sensor
    off auto` stops that.

Try it:
    dagtop materialize group:training         # everything
    dagtop materialize '*trained_model'       # trained_model and everything upstream of it
    dagtop materialize trained_model --param C=0.5 --param max_iter=300
    dagtop materialize 'evaluation+'          # re-evaluate the stored model, deploy if better
    dagtop materialize raw_digits             # with an engine up: new data, and it retrains

The dataset is scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download).

PERFORMANCE: heavy libraries (scikit-learn, numpy) are imported *inside* the asset functions,
never at the top of this file. dagtop imports every pipeline file when it loads the folder
(`dagtop check`, `dagtop list`, every reload after an edit) and each step's worker process
imports the file that defines the step. A top-level `import sklearn` costs about a second, paid
on every one of those imports, even by steps that never touch scikit-learn. Imported inside the
function, it is paid only by the steps that use it.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import Auto, CheckResult, asset, check, resource

GROUP = "training"
N_PIXELS = 64  # 8x8 images, flattened
N_CLASSES = 10
# A fixed seed makes every run split the data identically, so a retrained model is compared
# with the deployed one on exactly the same test images.
RANDOM_STATE = 42
TEST_FRACTION = 0.25
MIN_ACCURACY = 0.9


MODEL_NAME = "digits"


@dataclass
class TrainConfig:
    """The training run's settings, from its params: `--param C=0.5 --param max_iter=300`.

    A dataclass (a pydantic model works the same): importing pydantic here would cost every
    import of this file, by the loader and by each step's worker.
    """

    C: float = 1.0  # inverse regularization strength of the logistic regression
    max_iter: int = 500
    tags: list[str] = field(default_factory=list)  # `--param 'tags=["nightly"]'`


class ModelStore:
    """Deployed models: one pickle per name in a folder, replaced atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.pkl"

    def load(self, name: str) -> Any | None:
        path = self.path(name)
        if not path.exists():
            return None
        with path.open("rb") as fh:
            return pickle.load(fh)

    def deploy(self, name: str, model: Any) -> Path:
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write a temp file in the same folder, then rename it over the old one: os.replace is
        # atomic, so a crash or a reader at the wrong moment never sees half a model.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a model server may run as another user
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


@resource
def model_store(context) -> ModelStore:
    """Where models are deployed: `[resources.model_store] folder = "..."` in dagtop.toml
    (default: `models` in `context.shared_dir`, which every worker reaches: on a Dask cluster
    `evaluation` may run on another machine than the `deployed` that wrote the model, and
    the home folder is the coordinating engine's)."""
    folder = context.config.get("folder")
    return ModelStore(Path(folder).expanduser() if folder else Path(context.shared_dir) / "models")


@asset(group=GROUP)
def raw_digits(context) -> dict[str, Any]:
    """The digits dataset as plain numpy arrays: `images` (n x 64) and `labels` (n)."""
    from sklearn.datasets import load_digits  # heavy import: keep it inside the function

    digits = load_digits()
    context.log.info("loaded %d images of %d pixels", *digits.data.shape)
    # Return plain data, not the sklearn `Bunch`: values are pickled between steps, and plain
    # arrays stay readable whatever version of scikit-learn unpickles them.
    return {"images": digits.data, "labels": digits.target}


@check(asset="raw_digits", blocking=True)
def no_nulls(raw_digits: dict[str, Any]) -> CheckResult:
    """No missing pixels, 64 pixels per image, one label per image, labels 0-9."""
    import numpy as np

    images, labels = raw_digits["images"], raw_digits["labels"]
    n_nan = int(np.isnan(images).sum())
    problems = []
    if n_nan:
        problems.append(f"{n_nan} NaN pixels")
    if images.ndim != 2 or images.shape[1] != N_PIXELS:
        problems.append(f"images have shape {images.shape}, expected (n, {N_PIXELS})")
    if len(labels) != len(images):
        problems.append(f"{len(labels)} labels for {len(images)} images")
    if len(labels) and not set(np.unique(labels)) <= set(range(N_CLASSES)):
        problems.append("labels outside 0-9")
    return CheckResult(
        passed=not problems,
        metadata={"rows": int(len(images)), "nan_pixels": n_nan},
        description="; ".join(problems) or "complete and well formed",
    )


@asset(group=GROUP, auto=Auto.eager())
def features(context, raw_digits: dict[str, Any]) -> dict[str, Any]:
    """Pixels scaled to [0, 1] and a fixed train/test split."""
    import numpy as np

    # A fixed scale (pixels go from 0 to 16) rather than one fitted on the data: the deployed
    # model then needs no scaler of its own, and any model can be evaluated on any split.
    x = raw_digits["images"].astype(np.float64) / 16.0
    y = raw_digits["labels"]
    order = np.random.default_rng(RANDOM_STATE).permutation(len(y))
    n_test = int(len(y) * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    context.add_metadata({"train_rows": len(train), "test_rows": len(test)})
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


@asset(group=GROUP, retries=1, timeout=120, memory_limit="1GiB", auto=Auto.eager())
def trained_model(context, features: dict[str, Any], config: TrainConfig) -> Any:
    """A logistic regression fitted on the training split, with the run's `TrainConfig`.

    `retries=1` tries once more after a failure, `timeout` kills a fit that hangs, and
    `memory_limit` kills the step's whole process tree if it grows past 1 GiB.
    """
    from sklearn.linear_model import LogisticRegression

    x, y = features["x_train"], features["y_train"]
    context.log.info(
        "fitting on %d images (attempt %d, C=%g, max_iter=%d%s)", len(y), context.attempt,
        config.C, config.max_iter, f", tags {', '.join(config.tags)}" if config.tags else "",
    )  # fmt: skip
    started = time.perf_counter()
    model = LogisticRegression(C=config.C, max_iter=config.max_iter)
    model.fit(x, y)
    took = time.perf_counter() - started
    train_accuracy = float(model.score(x, y))
    context.log.info("fitted in %.2fs (%d iterations)", took, int(model.n_iter_.max()))
    context.add_metadata(
        {
            "train_accuracy": round(train_accuracy, 4),
            "fit_seconds": round(took, 3),
            "iterations": int(model.n_iter_.max()),
        }
    )
    return model


@asset(group=GROUP, auto=Auto.eager())
def evaluation(
    context, features: dict[str, Any], trained_model: Any, model_store: ModelStore
) -> dict[str, Any]:
    """Test accuracy of the new model and of the currently deployed one (if any).

    The value carries the evaluated model along, so `deployed` can only ever deploy the model
    whose accuracy it compares. Had `deployed` taken `trained_model` too, re-materializing
    `trained_model` alone and then `deployed` would pair a new model with an old evaluation.
    """
    x, y = features["x_test"], features["y_test"]
    accuracy = float(trained_model.score(x, y))
    context.log.info("new model: %.4f accuracy on %d test images", accuracy, len(y))

    deployed_accuracy = None
    path = model_store.path(MODEL_NAME)
    if path.exists():
        try:
            current = model_store.load(MODEL_NAME)
            deployed_accuracy = float(current.score(x, y))
            context.log.info("deployed model: %.4f accuracy", deployed_accuracy)
        except Exception as exc:  # an unreadable model is as good as none
            # E.g. pickled by another scikit-learn version. Replacing it is the useful outcome.
            context.log.warning("cannot evaluate the deployed model %s: %s", path, exc)
    else:
        context.log.info("no model deployed yet at %s", path)

    context.add_metadata(
        {
            "accuracy": round(accuracy, 4),
            "deployed_accuracy": None if deployed_accuracy is None else round(deployed_accuracy, 4),
        }
    )
    return {
        "model": trained_model,
        "accuracy": accuracy,
        "deployed_accuracy": deployed_accuracy,
        "test_rows": len(y),
    }


@check(asset="evaluation")
def accuracy_above_90pct(evaluation: dict[str, Any]) -> CheckResult:
    """Non-blocking: a weak model shows as a failed check, but the run goes on."""
    return CheckResult(
        passed=evaluation["accuracy"] >= MIN_ACCURACY,
        metadata={"accuracy": round(evaluation["accuracy"], 4), "minimum": MIN_ACCURACY},
    )


@asset(group=GROUP, auto=Auto.eager())
def deployed(context, evaluation: dict[str, Any], model_store: ModelStore) -> dict[str, Any]:
    """Deploy the evaluated model to the model store if it beats the deployed one."""
    path = model_store.path(MODEL_NAME)
    new, old = evaluation["accuracy"], evaluation["deployed_accuracy"]
    # Strictly better only: an equal model (the same code on the same data) is not redeployed,
    # so running the pipeline twice leaves the deployed file untouched.
    if old is not None and new <= old:
        reason = f"kept the deployed model: new accuracy {new:.4f} <= deployed {old:.4f}"
        deploy = False
    else:
        reason = (
            "the first model (none was deployed before)"
            if old is None
            else f"new accuracy {new:.4f} > deployed {old:.4f}"
        )
        deploy = True
        model_store.deploy(MODEL_NAME, evaluation["model"])
    context.log.info("%s: %s", "deployed" if deploy else "not deployed", reason)
    result = {
        "deployed": deploy,
        "reason": reason,
        "path": str(path),
        "accuracy": new,
        "previous_accuracy": old,
    }
    context.add_metadata(
        {"deployed": deploy, "reason": reason, "path": str(path), "accuracy": round(new, 4)}
    )
    return result
