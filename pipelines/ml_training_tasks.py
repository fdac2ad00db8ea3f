"""The digits training scenario again, Airflow style: a `Pipeline` of tasks linked with `>>`.

What this example shows:
  - `with Pipeline(...)` with a cron schedule (every day at 03:00, no catchup);
  - `@task` functions that receive upstream return values through parameters named after the
    upstream task ids (`train(extract)` gets what `extract` returned);
  - ordering without passing values (`validate >> ...`), fan-out and fan-in with lists
    (`[train, baseline] >> evaluate`): train and baseline run in parallel;
  - a branch on validation: `validate` (`branch=True`) returns the ids of the tasks to run
    next, `["train", "baseline"]` when the data looks right, else `"quarantine"`; the tasks it
    did not choose are skipped ("not chosen by validate"), and so is what needs them;
  - a short-circuit as a quality gate: `good_enough` (`short_circuit=True`) returns whether
    the model beats the bar; False skips `publish` ("short-circuited by good_enough"). A run
    whose only skips were chosen so is a success;
  - a clean-up that runs whatever happened upstream: `trigger_rule="all_done"`;
  - a `shell(...)` task, which sees DAGTOP_HOME and DAGTOP_RUN_ID in its environment.

Try it:
    dagtop run training_tasks
    dagtop run training_tasks --param min_images=5000    # too few images: quarantined
    dagtop run training_tasks --param min_accuracy=0.999 # not good enough: not published

Return values are pickled to disk and unpickled by the next task's process: keep them
small-ish (arrays of a few MB are fine, whole datasets are better written to files).

PERFORMANCE: scikit-learn and numpy are imported inside the task functions, not at the top of
the file. Every pipeline file is imported when dagtop loads the folder and again by each
step's worker process; a top-level `import sklearn` (about a second) would be paid by every
task and every reload, including the shell task that never uses it.
"""

from __future__ import annotations

from typing import Any

from engine import Pipeline, shell, task

RANDOM_STATE = 42
TEST_FRACTION = 0.25
MIN_ACCURACY = 0.9

with Pipeline(
    "training_tasks",
    schedule="0 3 * * *",
    start="2025-01-01",
    catchup=False,
    description="Retrain the digits classifier every night and publish it if it is good enough.",
):

    @task
    def extract(context) -> dict[str, Any]:
        """Load the digits and split them once, with a fixed seed."""
        import numpy as np
        from sklearn.datasets import load_digits

        digits = load_digits()
        # Pixels are 0-16: uint8 makes the pickled value 8x smaller than float64.
        images = digits.data.astype(np.uint8)
        order = np.random.default_rng(RANDOM_STATE).permutation(len(images))
        n_test = int(len(images) * TEST_FRACTION)
        context.log.info("extracted %d images (%d for testing)", len(images), n_test)
        return {"images": images, "labels": digits.target, "test": order[:n_test]}

    @task(branch=True)
    def validate(context, extract: dict[str, Any]) -> str | list[str]:
        """Train only on data that looks right: returns the tasks to run next."""
        images, labels = extract["images"], extract["labels"]
        problems = []
        if images.shape[1:] != (64,) or len(labels) != len(images):
            problems.append(f"unexpected shapes: images {images.shape}, labels {labels.shape}")
        if images.max() > 16:
            problems.append(f"pixel values go up to {images.max()}, expected 0-16")
        if len(images) < int(context.params.get("min_images", 1000)):
            problems.append(f"only {len(images)} images")
        if problems:
            context.log.warning("data rejected: %s", "; ".join(problems))
            return "quarantine"
        context.log.info("%d images look fine", len(images))
        return ["train", "baseline"]

    @task
    def quarantine(context, extract: dict[str, Any]) -> int:
        """Set the rejected data aside for a person to look at (here: count it)."""
        context.log.warning("quarantined %d images", len(extract["images"]))
        return len(extract["images"])

    @task(retries=1, timeout=120, memory_limit="1GiB")
    def train(context, extract: dict[str, Any]) -> Any:
        """Fit a logistic regression on the training images."""
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        train_rows = np.setdiff1d(np.arange(len(extract["labels"])), extract["test"])
        model = LogisticRegression(max_iter=500)
        model.fit(extract["images"][train_rows] / 16.0, extract["labels"][train_rows])
        context.log.info("fitted on %d images in %d iterations", len(train_rows), model.n_iter_[0])
        return model  # a few KB pickled

    @task
    def baseline(extract: dict[str, Any]) -> float:
        """Accuracy of always guessing the most common training label: what to beat."""
        from collections import Counter

        test = set(extract["test"].tolist())
        labels = extract["labels"].tolist()
        train_labels = [y for i, y in enumerate(labels) if i not in test]
        most_common = Counter(train_labels).most_common(1)[0][0]
        return sum(labels[i] == most_common for i in test) / len(test)

    @task
    def evaluate(context, extract: dict[str, Any], train: Any, baseline: float) -> dict[str, Any]:
        """Test accuracy, and what it has to beat."""
        test = extract["test"]
        accuracy = float(train.score(extract["images"][test] / 16.0, extract["labels"][test]))
        context.log.info("accuracy %.4f (baseline %.4f)", accuracy, baseline)
        return {"accuracy": accuracy, "baseline": baseline}

    @task(short_circuit=True)
    def good_enough(context, evaluate: dict[str, Any]) -> bool:
        """Publish only a model that beats the bar: False skips everything downstream."""
        bar = max(float(context.params.get("min_accuracy", MIN_ACCURACY)), evaluate["baseline"])
        if evaluate["accuracy"] < bar:
            context.log.warning(
                "accuracy %.4f is below %.4f: not published", evaluate["accuracy"], bar
            )
            return False
        return True

    # A shell task: any command, run by /bin/sh. It fails if the command exits non-zero.
    publish = shell(
        'echo "publishing the digits model of run $DAGTOP_RUN_ID" && '
        'mkdir -p "$DAGTOP_HOME/published" && '
        'echo "$DAGTOP_RUN_ID" > "$DAGTOP_HOME/published/training_tasks.done"',
        id="publish",
    )

    @task(trigger_rule="all_done")
    def tidy(context) -> None:
        """Runs once everything before it finished, however it went (Airflow's all_done);
        a short-circuit skips it all the same, as Airflow's does by default."""
        context.log.info("nothing to tidy in this example")

    # `a >> b` runs b after a. `train` and `evaluate` already depend on the tasks they take as
    # parameters; `>>` adds the orderings that pass no value (train waits for validate).
    extract >> validate >> [train, baseline, quarantine]
    [train, baseline] >> evaluate >> good_enough >> publish
    [publish, quarantine] >> tidy
