"""The MLflow UI as a person sees it, in headless Chromium against the real `mlflow server` that recorded the
session's real study (tests/conftest.py `study`; MLflow 3.17's UI).

What the UI does with a study (found in the browser and its JS bundle; these tests hold it):
- The UI's GenAI / Model training switch is global (localStorage `mlflow.workflowType_v1`, default GenAI; a
  `workflowType=` URL parameter overrides it) and it, not the experiment's `mlflow.experimentKind` tag, picks the
  view: a fresh browser clicking the experiment lands on the GenAI overview. `#/experiments/<id>/runs` always
  opens the runs table.
- The runs table shows no metric column by default (columns live in the browser's local storage); the URL can sort
  (`orderByKey=metrics.%60best_val_macro_f1%60&orderByAsc=false`) but not pick columns. A saved view, an experiment
  tag `mlflow.sharedViewState.<key>` (trainables.tracking.mlflow_ui.runs_view), can: `#/experiments/<id>/runs?
  viewStateShareKey=<key>` opens it, and it is listed under "Views" for everyone.
- Markdown links in a description (`mlflow.note.content`) render as links, opened in a new tab; the experiment's
  description shows (clamped to its first paragraph) above the runs table: the winner's link goes first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

from analysis.reading.runs import trial_rows
from tests import browser
from trainables.metrics import BEST_KEY, OBJECTIVE
from trainables.tracking import mlflow_ui
from trainables.tracking.mlflow_runs import STUDY_TAG, latest_study

REASON = browser.unavailable()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

QUIET = {
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",  # the assistant panel would take a quarter
    "mlflow.assistant.panelOpen_v1": "false",
}  # of the width; it blocks no click
MAX_CLICKS = 4
WORKFLOW_KEY = "mlflow.workflowType_v1"  # the GenAI / Model training switch, "genai" until a person flips it


def runs_table_url(base_url: str, experiment_id: str, view: bool = True) -> str:
    """The runs table in the Model training view: the study's saved view, or (view=False) only sorted."""
    if view:
        return f"{base_url}/{mlflow_ui.runs_page(experiment_id)}"
    return (
        f"{base_url}/#/experiments/{experiment_id}/runs?orderByKey={quote(f'metrics.`{BEST_KEY}`')}"
        "&orderByAsc=false&workflowType=machine_learning"
    )


# ------------------------------------------------------------------------------------------- the browser part


def open_quiet(driver, base_url: str) -> None:
    browser.set_local_storage(driver, base_url, QUIET)


def displayed(driver, xpath: str):
    """The first displayed element at xpath, or None."""
    return next((e for e in driver.find_elements("xpath", xpath) if e.is_displayed()), None)


def table_run_names(driver) -> list[str]:
    """Run names of the runs table's rows, top to bottom."""
    links = driver.find_elements("xpath", "//*[@role='row']//a[contains(@href, '/runs/')]")
    return [a.text for a in sorted(links, key=lambda a: a.location["y"]) if a.text]


def check_runs_table(
    driver, base_url: str, experiment_id: str, ranking: list[str], shot_dirs: list[Path], view: bool = True
) -> None:
    """The runs table (not the GenAI overview) of the experiment, sorted by best_val_macro_f1 with that column
    on screen: `ranking` (trial run names, best first) is the order of its first rows. Saves mlflow-runs.png."""
    open_quiet(driver, base_url)
    driver.get(runs_table_url(base_url, experiment_id, view))
    header = browser.wait_until(
        driver,
        lambda: displayed(driver, f"//*[@role='columnheader'][.='{BEST_KEY}']"),
        30,
        f"a displayed column header {BEST_KEY!r}",
    )
    width = driver.execute_script("return window.innerWidth")
    assert header.rect["x"] + header.rect["width"] <= width, f"{BEST_KEY} column is off screen: {header.rect}"
    assert driver.title.startswith("Runs"), f"not the runs table: {driver.title!r} at {driver.current_url}"
    assert "/overview" not in driver.current_url and "/traces" not in driver.current_url, driver.current_url
    browser.wait_for_text(driver, f"Sort: {BEST_KEY}")
    try:
        browser.wait_until(driver, lambda: table_run_names(driver)[: len(ranking)] == ranking, 20, "row order")
    except AssertionError:
        raise AssertionError(f"rows {table_run_names(driver)}, not best first: {ranking}") from None
    browser.save_screenshot(driver, "mlflow-runs.png", shot_dirs)


@dataclass
class Clicks:
    """Clicks as a person makes them (a real click on a displayed element), counted; follows a new tab."""

    driver: object
    path: list[str] = field(default_factory=list)

    def on(self, element, label: str) -> None:
        handles = set(self.driver.window_handles)
        new_tab = element.get_attribute("target") == "_blank"
        element.click()
        self.path.append(label)
        if new_tab:
            tab = browser.wait_until(
                self.driver, lambda: set(self.driver.window_handles) - handles, 10, f"the tab opened by {label}"
            )
            self.driver.switch_to.window(tab.pop())


def walk_to_winner_model(
    driver, base_url: str, experiment_name: str, winner_id: str, winner_name: str, model_id: str, shot_dirs: list[Path]
) -> list[str]:
    """From the UI's home page, in a fresh browser, to the winner's logged model: Model training, the experiment,
    the winner link in the experiment's description, the model in the run's "Logged models". Saves
    mlflow-winner-run.png and mlflow-model.png; returns the click path."""
    open_quiet(driver, base_url)
    driver.get(base_url + "/")
    clicks = Clicks(driver)
    find = lambda xpath, what: browser.wait_until(driver, lambda: displayed(driver, xpath), 30, what)  # noqa: E731
    clicks.on(find("//*[normalize-space(text())='Model training']", "the Model training switch"), "Model training")
    browser.wait_until(
        driver,
        lambda: driver.execute_script(f"return localStorage.getItem('{WORKFLOW_KEY}')") == '"machine_learning"',
        10,
        "the switch to Model training",
    )
    clicks.on(
        find(f"//a[normalize-space(.)='{experiment_name}']", f"experiment link {experiment_name!r}"),
        f"experiment {experiment_name}",
    )
    browser.wait_until(driver, lambda: driver.title.startswith("Runs"), 30, "the runs table")
    clicks.on(
        find(f"//a[substring-after(@href, '/runs/')='{winner_id}']", f"a link to winner {winner_name}"),
        f"winner {winner_name} (description link)",
    )
    browser.wait_until(driver, lambda: driver.current_url.endswith(f"/runs/{winner_id}"), 30, "the winner's page")
    browser.wait_for_text(driver, "About this run")
    browser.wait_for_text(driver, winner_name)
    browser.wait_for_text(driver, "Logged models (1)")
    browser.save_screenshot(driver, "mlflow-winner-run.png", shot_dirs)
    clicks.on(
        find(f"//a[contains(@href, '/models/{model_id}')][not(@target)]", f"logged model {model_id}"), "logged model"
    )
    browser.wait_until(driver, lambda: model_id in driver.current_url, 30, f"the page of logged model {model_id}")
    browser.wait_for_text(driver, "About this logged model")
    browser.wait_for_text(driver, winner_name)  # its source run
    browser.save_screenshot(driver, "mlflow-model.png", shot_dirs)
    return clicks.path


# ------------------------------------------------------------------------------------ the session's real study


def distinct_head(rows) -> list[str]:
    """Trial names best first, up to the first tie (the UI orders tied rows its own way)."""
    out = []
    for i, r in enumerate(rows):
        if not r.epochs or (i + 1 < len(rows) and rows[i + 1].best == r.best):
            return out + ([r.name] if r.epochs and not out else [])
        out.append(r.name)
    return out


@pytest.fixture
def shots(tmp_path) -> list[Path]:
    return [tmp_path, *browser.screenshot_dirs()]


@pytest.mark.timeout(180)
def test_runs_table_sorted_by_objective_with_its_column(study, shots):
    """The link tune.py prints opens the runs table (not the GenAI view), best trial first, with its column."""
    exp, _ = latest_study(study.client, study.experiment)
    # the table holds every study of the experiment (the session's runs a 1-trial study first): rank them all
    parents = study.client.search_runs([exp.experiment_id], f"tags.`{STUDY_TAG}` = '1'")
    rows = sorted(
        (r for p in parents for r in trial_rows(study.client, exp.experiment_id, p.info.run_id)),
        key=lambda r: OBJECTIVE.sort_key(r.best),
    )
    with browser.chrome() as driver:
        check_runs_table(driver, study.uri, exp.experiment_id, distinct_head(rows), shots)
    assert (shots[0] / "mlflow-runs.png").stat().st_size > 10_000
    assert runs_table_url(study.uri, exp.experiment_id) in study.out  # the summary's "browse the study" link


@pytest.mark.timeout(180)
def test_winner_model_within_four_clicks_of_the_home_page(study, shots):
    client = study.client
    exp, parent = latest_study(client, study.experiment)
    won = client.get_run(client.get_run(parent.info.run_id).data.tags["winner_run_id"])
    model = client.search_logged_models([exp.experiment_id], filter_string=f"source_run_id = '{won.info.run_id}'")[0]
    with browser.chrome() as driver:
        path = walk_to_winner_model(
            driver, study.uri, study.experiment, won.info.run_id, won.info.run_name, model.model_id, shots
        )
    assert len(path) <= MAX_CLICKS, f"{len(path)} clicks: {' > '.join(path)}"
