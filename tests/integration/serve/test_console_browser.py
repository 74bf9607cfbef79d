"""The console in a real browser: Playwright driving Debian's Chromium against a real `lmtune serve` with its worker.

One server and one browser for the module; the tests run in file order and share project alpha's
data (the job trained in one is chatted with in the next). Screenshots go to tests/output/console/.
Every page is watched for JavaScript dialogs (an injected alert would open one) and CSP violations.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google on a closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[2] / "output" / "console"
HOSTILE = "<img src=x onerror=alert(1)>"
TRAIN_S = 240  # a 2-epoch tiny-llama job takes well under a minute on 2 cores; the margin is for a busy machine


@pytest.fixture(scope="module")
def console(module_server):
    srv = module_server("console")
    srv.start()
    srv.keys = {"alpha": srv.key("alpha"), "beta": srv.key("beta")}
    return srv


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: `apt-get install chromium` (.ci/run does this)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Watched:
    """A browser context's page with every dialog and CSP violation recorded."""

    def __init__(self, browser, base_url: str):
        self.context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.csp: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("console", lambda m: self.csp.append(m.text) if "Content Security Policy" in m.text else None)

    def sign_in(self, key: str) -> None:
        self.page.goto("/console/login")
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page).to_have_url(re.compile(r"/console/jobs$"))

    def check_clean(self) -> None:
        assert self.dialogs == [], f"a dialog fired: {self.dialogs}"
        assert self.csp == [], f"CSP violations: {self.csp}"


@pytest.fixture(scope="module")
def alpha(browser, console):
    watched = Watched(browser, console.url)
    watched.sign_in(console.keys["alpha"])
    yield watched
    watched.context.close()


@pytest.fixture(autouse=True)
def _no_dialogs_or_csp_violations(request):
    yield
    if "alpha" in request.fixturenames:
        request.getfixturevalue("alpha").check_clean()


def upload(page, name: str, data: bytes) -> str:
    """Upload through the files page; returns the new file id."""
    page.goto("/console/files")
    page.get_by_label("File", exact=True).set_input_files({"name": name, "mimeType": "application/jsonl", "buffer": data})
    page.get_by_role("button", name="Upload and check").click()
    return re.search(r"file-[0-9a-f]{24}", page.locator("main").inner_text()).group(0)


def test_sign_in_from_the_keyboard(browser, console):
    watched = Watched(browser, console.url)
    page = watched.page
    page.goto("/console/login")
    expect(page.get_by_label("API key")).to_be_focused()  # autofocus: typing starts at once
    page.keyboard.type("sk-lmt-not-a-key")
    page.keyboard.press("Enter")
    expect(page.locator("#login-error")).to_have_text("Incorrect or revoked API key.")
    page.get_by_label("API key").focus()
    page.keyboard.type(console.keys["alpha"])
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Sign in")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/console/jobs$"))
    expect(page.locator("#project-name")).to_have_text("alpha")
    cookie = next(c for c in watched.context.cookies() if c["name"] == "lmtune_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and console.keys["alpha"] not in cookie["value"]
    watched.check_clean()
    watched.context.close()


def test_upload_a_good_and_a_bad_file(alpha, chat_data):
    page = alpha.page
    upload(page, "facts.jsonl", chat_data)
    expect(page.locator("#verdict")).to_contain_text("Ready to train: 16 examples")
    expect(page.locator("#token-stats")).to_contain_text("Tokens per example with the tiny-llama tokenizer")
    page.screenshot(path=SHOTS / "file-good.png", full_page=True)

    role = "<b onmouseover=alert(2)>x</b>"  # quoted by the validator's message
    bad = (chat_data + json.dumps({"messages": HOSTILE}).encode() + b"\n" + b'{"messages": [' + HOSTILE.encode()
           + b"\n" + json.dumps({"messages": [{"role": role, "content": "hi"}]}).encode() + b"\n")
    upload(page, HOSTILE + ".jsonl", bad)
    expect(page.locator("#verdict")).to_contain_text("3 errors")
    expect(page.locator("#issues td.line")).to_have_text(["17", "18", "19"])
    expect(page.locator("#issues td.message").nth(2)).to_contain_text(f"role '{role}' is not one of")
    assert page.locator("#issues b").count() == 0
    expect(page.locator("h1.filename")).to_have_text(HOSTILE + ".jsonl")  # literal text, not an element
    assert page.locator("img[src=x]").count() == 0
    page.screenshot(path=SHOTS / "file-errors.png", full_page=True)
    page.goto("/console/files")
    expect(page.locator("#files a.filename").first).to_have_text(HOSTILE + ".jsonl")


@pytest.fixture(scope="module")
def training_file(alpha, chat_data) -> str:
    return upload(alpha.page, "train.jsonl", chat_data)


@pytest.fixture(scope="module")
def fine_tuned(alpha, training_file) -> str:
    """Create a 2-epoch tiny-llama job from the jobs page and watch it succeed with points on the chart."""
    page = alpha.page
    page.goto("/console/jobs")
    page.get_by_label("Training file").select_option(training_file)
    page.get_by_label("Epochs").fill("2")
    page.get_by_label("Suffix").fill("console")
    page.get_by_label("Metadata (key=value per line)").fill(f"note={HOSTILE}")
    page.get_by_role("button", name="Create job").click()
    expect(page).to_have_url(re.compile(r"/console/jobs/ftjob-[0-9a-f]+$"))
    expect(page.locator("#job-status")).to_have_text("running", timeout=TRAIN_S * 1000)
    expect(page.locator("#loss-chart canvas")).to_have_count(1, timeout=TRAIN_S * 1000)
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=TRAIN_S * 1000)
    expect(page.locator("#chart-note")).to_have_text(re.compile(r"^\d+ steps logged\.$"))
    return page.locator("#fine-tuned-model").inner_text()


def test_a_job_trains_to_succeeded_with_its_curve_events_and_checkpoints(alpha, fine_tuned):
    page = alpha.page
    assert int(page.locator("#loss-chart").get_attribute("data-points")) >= 6  # 14 training rows, batch 4, 2 epochs
    expect(page.locator("#events")).to_contain_text("The job has successfully completed")
    expect(page.locator("#checkpoints tbody tr").first).to_be_visible()
    expect(page.locator("#hyperparameters")).to_contain_text("n_epochs")
    expect(page.locator("#metadata")).to_contain_text(HOSTILE)
    assert page.locator("img[src=x]").count() == 0
    page.screenshot(path=SHOTS / "job.png", full_page=True)
    page.goto("/console/jobs")
    expect(page.locator("#jobs .status").first).to_have_text("succeeded")
    page.goto("/console/models")
    expect(page.locator("#tuned-models")).to_contain_text(fine_tuned)


def test_playground_streams_both_answers(alpha, fine_tuned):
    page = alpha.page
    page.goto("/console/playground")
    page.get_by_label("Left model").select_option("tiny-llama")
    page.get_by_label("Right model").select_option(fine_tuned)
    page.get_by_label("Prompt").fill("What floats?")
    page.get_by_label("Max tokens").fill("12")
    page.get_by_role("button", name="Send to both").click()
    for side in ("left", "right"):
        expect(page.locator(f"#{side}-answer")).to_have_attribute("data-done", "true", timeout=120_000)
        assert page.locator(f"#{side}-answer").inner_text().strip(), side
        expect(page.locator(f"#{side}-answer")).not_to_have_class(re.compile("error"))
    expect(page.locator("#right-name")).to_have_text(fine_tuned)
    page.screenshot(path=SHOTS / "playground.png", full_page=True)


def test_model_output_with_markup_is_shown_as_text(alpha, fine_tuned):
    """A model can be trained to answer anything: answers containing markup must stay text.

    The server's stream for the left column is replaced by one whose answer is hostile HTML, so the
    page's own rendering code is what is tested; the right column is the real model.
    """
    page = alpha.page
    hostile = ["<script>alert(2)</script>", HOSTILE, "<b onclick=alert(3)>bold</b>"]
    body = "".join("data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": piece}}]}) + "\n\n"
                   for piece in hostile) + "data: [DONE]\n\n"

    def answer(route):
        form = route.request.post_data or ""
        if "tiny-llama" in form and fine_tuned not in form:
            route.fulfill(status=200, headers={"content-type": "text/event-stream"}, body=body)
        else:
            route.continue_()

    page.route("**/console/playground/stream", answer)
    try:
        page.goto("/console/playground")
        page.get_by_label("Right model").select_option(fine_tuned)
        page.get_by_label("Prompt").fill("Say something")
        page.get_by_label("Max tokens").fill("4")
        page.get_by_role("button", name="Send to both").click()
        expect(page.locator("#left-answer")).to_have_text("".join(hostile))
        expect(page.locator("#right-answer")).to_have_attribute("data-done", "true", timeout=60_000)
        assert page.locator("#left-answer *").count() == 0  # no element was created from the answer
    finally:
        page.unroute("**/console/playground/stream")


def test_cancel_a_second_job(alpha, training_file, fine_tuned):
    page = alpha.page
    page.goto("/console/jobs")
    page.get_by_label("Training file").select_option(training_file)
    page.get_by_label("Epochs").fill("50")
    page.get_by_role("button", name="Create job").click()
    expect(page.locator("#job-status")).to_have_text("running", timeout=TRAIN_S * 1000)
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#job-status")).to_have_text("cancelled")
    expect(page.locator("#events")).to_contain_text("Job cancelled")
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    page.screenshot(path=SHOTS / "job-cancelled.png", full_page=True)


def test_a_preference_job_draws_its_reward_curve(alpha, dpo_data):
    page = alpha.page
    pairs = upload(page, "pairs.jsonl", dpo_data)
    page.goto("/console/jobs")
    page.get_by_label("Training file").select_option(pairs)
    page.get_by_label("Method").select_option("dpo")
    page.get_by_label("Epochs").fill("1")
    page.get_by_label("DPO beta").fill("0.2")
    page.get_by_role("button", name="Create job").click()
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=TRAIN_S * 1000)
    expect(page.locator("#chart-note")).to_have_text(re.compile(r"^\d+ steps logged\.$"))
    expect(page.locator("#reward-chart canvas")).to_have_count(1)
    expect(page.locator("#reward-chart")).to_contain_text("reward margin")
    expect(page.locator("#hyperparameters")).to_contain_text("beta")
    page.screenshot(path=SHOTS / "job-dpo.png", full_page=True)


def test_another_project_gets_404_for_alphas_job_in_the_browser(browser, console, alpha, fine_tuned):
    job_url = alpha.page.url if "/console/jobs/ftjob-" in alpha.page.url else None
    assert job_url is not None
    beta = Watched(browser, console.url)
    beta.sign_in(console.keys["beta"])
    response = beta.page.goto(job_url)
    assert response.status == 404
    expect(beta.page.locator("h1")).to_have_text("Not found (404)")
    beta.page.goto("/console/jobs")
    expect(beta.page.locator("main")).to_contain_text("No jobs yet.")
    beta.check_clean()
    beta.context.close()
