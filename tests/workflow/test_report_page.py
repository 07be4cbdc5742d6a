"""The HTML report a person opens: beside the JSON one in the bucket, reached through the
notification's link, and rendered by a real headless Chromium (Debian's ``chromium`` package).

The screenshots and DOM dumps are kept in ``.rehearsal/test-output/<test name>/`` to be looked at.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import boto3
import pytest
from PIL import Image
from scalelab_rehearsal import ROOT
from scalelab_rehearsal.rehearse import Outcome

from tests.workflow.conftest import Rehearsal

CHROMIUM = shutil.which("chromium")
OUTPUT = ROOT / ".rehearsal" / "test-output"

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed: `make setup` installs it when run as root "
    "(apt-get install -y chromium)",
)


def output_folder(request: pytest.FixtureRequest) -> Path:
    folder = OUTPUT / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def open_in_chromium(page: Path, folder: Path) -> tuple[str, Image.Image]:
    """The page's DOM once loaded, and a 1200x1600 screenshot of it."""
    assert CHROMIUM is not None
    browser = [
        CHROMIUM,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        "--window-size=1200,1600",
        f"--user-data-dir={folder / 'profile'}",
    ]
    screenshot = folder / "page.png"
    subprocess.run(
        [*browser, f"--screenshot={screenshot}", page.as_uri()], check=True, capture_output=True, timeout=120
    )
    dom = subprocess.run(
        [*browser, "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    (folder / "dom.html").write_text(dom)
    shutil.rmtree(folder / "profile", ignore_errors=True)
    return dom, Image.open(screenshot).convert("RGB")


def assert_the_page_is_in_the_bucket_and_behind_the_link(outcome: Outcome) -> str:
    assert outcome.verdict is not None
    report, page = outcome.verdict["report"], outcome.verdict["page"]
    assert page["key"] == report["key"].removesuffix(".json") + ".html"
    keys = {
        item["Key"]
        for item in boto3.client("s3").list_objects_v2(Bucket=page["bucket"], Prefix="reports/")["Contents"]
    }
    assert {report["key"], page["key"]} <= keys
    stored = boto3.client("s3").get_object(Bucket=page["bucket"], Key=page["key"])
    assert stored["ContentType"] == "text/html; charset=utf-8"
    body = stored["Body"].read()
    # The notification's link, signed by PublishReport's role, opens this very page.
    assert outcome.page_error is None
    assert outcome.page_path is not None
    assert outcome.page_path.read_bytes() == body
    assert any(
        call.api == "s3:GetObject"
        and call.principal.role_logical_id == "PublishReportFunctionRole"
        and not call.denied
        for call in outcome.iam_calls
    )
    page = str(body.decode())
    # Written after Teardown: every resource the run created, each with when it was removed.
    ledger = page.split('<table id="resources">', 1)[1].split("</table>", 1)[0]
    removals = re.findall(r"<tr><td>(\w+)</td><td>[^<]+</td><td>([^<]+)</td></tr>", ledger)
    assert {kind for kind, _ in removals} >= {"auto_scaling_group", "load_balancer", "alb_security_group"}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", removed) for _, removed in removals)
    assert "Everything was removed by " in page
    return page


def assert_rendered(dom: str, shot: Image.Image, verdict: str) -> None:
    assert re.search(rf'<p id="verdict" class="verdict {verdict.lower()}">{verdict}</p>', dom)
    timeline = dom.split('<section id="timeline">', 1)[1].split("</section>", 1)[0]
    assert len(re.findall(r"<svg[^>]*pygal-chart", timeline)) == 2
    assert shot.size == (1200, 1600)
    colours = shot.getcolors(maxcolors=1200 * 1600)
    assert colours is not None
    assert len(colours) > 1, "the screenshot is one colour: the page did not render"
    # The verdict's badge is on the page: green for passed, red for failed.
    badge = (0x2E, 0x7D, 0x32) if verdict == "PASSED" else (0xC6, 0x28, 0x28)
    assert any(colour == badge for _, colour in colours)


@needs_chromium
def test_a_passed_run_has_a_page_chromium_renders(
    rehearsal: Rehearsal, request: pytest.FixtureRequest
) -> None:
    outcome = rehearsal.run(name="wf-page-pass")

    assert outcome.status == "SUCCEEDED", outcome.cause
    assert outcome.notification is not None
    assert outcome.notification.splitlines()[0] == f"PASSED: scalelab run {outcome.run_id} (lab default)"
    page = assert_the_page_is_in_the_bucket_and_behind_the_link(outcome)
    # The world's datapoints reached the picture: the group's two series are drawn.
    group = page.split('<figure id="group">', 1)[1].split("</figure>", 1)[0]
    assert group.count('class="line reactive nofill"') >= 2
    assert "EC2 Instance Launch Successful" in page
    assert outcome.page_path is not None
    dom, shot = open_in_chromium(outcome.page_path, output_folder(request))
    assert_rendered(dom, shot, "PASSED")


@needs_chromium
@pytest.mark.scenario("never-healthy")
def test_a_failed_run_has_a_page_chromium_renders(
    rehearsal: Rehearsal, request: pytest.FixtureRequest
) -> None:
    outcome = rehearsal.run(name="wf-page-never-healthy")

    assert outcome.status == "FAILED"
    assert outcome.notification is not None
    assert outcome.notification.splitlines()[0] == f"FAILED: scalelab run {outcome.run_id} (lab default)"
    assert outcome.verdict is not None
    assert outcome.notification.splitlines()[2] == outcome.verdict["reason"]
    page = assert_the_page_is_in_the_bucket_and_behind_the_link(outcome)
    assert "targets not healthy within" in page
    assert outcome.page_path is not None
    dom, shot = open_in_chromium(outcome.page_path, output_folder(request))
    assert_rendered(dom, shot, "FAILED")
