"""`locvtp serve` end to end in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``)
driven by Selenium against a real server process. Nothing is downloaded: the browser and the driver are the
system's (``.ci/run`` installs them with apt-get); without them the test is skipped and says why.

It grounds a sentence in a synthetic video, clicks a ranked window and checks that the player's current time
moved into it; uploads an AVI (MPEG-4 Part 2, transcoded by the server) and a non-video; runs a search and
sees the thumbnails load; screenshots go to the test's tmp dir.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def _chromium() -> tuple[str | None, str | None, str]:
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if Path(p).exists()), None)
    try:
        import selenium  # noqa: F401
    except ImportError:
        return browser, driver, "the selenium package is not installed (pip install -e '.[dev]')"
    if browser is None:
        return None, driver, "no Chromium found (apt-get install chromium chromium-driver)"
    if driver is None:
        return browser, None, "no chromedriver found (apt-get install chromium-driver)"
    return browser, driver, ""


BROWSER, DRIVER, WHY_NOT = _chromium()
pytestmark = pytest.mark.skipif(bool(WHY_NOT), reason=f"browser test skipped: {WHY_NOT}")
QUERY = "the green triangle becomes larger"


@pytest.fixture(scope="module")
def server(tiny_world, tiny_checkpoint, tmp_path_factory):
    from locvtp.cli import main as cli
    from test_serve_api import start_server, stop_server

    root = tmp_path_factory.mktemp("serve_browser")
    assert cli(["extract", "--checkpoint", str(tiny_checkpoint), "--videos", str(tiny_world / "videos"),
                "--out", str(root / "feats.h5"), "--no-progress", "--threads", "1"]) == 0
    assert cli(["index", "--features", str(root / "feats.h5"), "--out", str(root / "idx"), "--no-progress"]) == 0
    proc, base = start_server(["--checkpoint", str(tiny_checkpoint), "--videos", str(tiny_world / "videos"),
                               "--index", str(root / "idx"), "--work-dir", str(root / "work")],
                              root / "server.log")
    try:
        yield base
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = BROWSER
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1360,900", "--mute-audio",
                "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        opts.add_argument(arg)
    profile = tmp_path_factory.mktemp("chromium_profile")
    opts.add_argument(f"--user-data-dir={profile}")
    drv = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)  # no Selenium Manager download
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def wait_for(fn, timeout=20.0, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 (stale elements while the page re-renders)
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def current_time(drv, video_id: str) -> float:
    return float(drv.execute_script(f"return document.getElementById('{video_id}').currentTime"))


def click_window_and_check(drv, shots: Path, name: str) -> tuple[float, float]:
    from selenium.webdriver.common.by import By

    items = wait_for(lambda: drv.find_elements(By.CSS_SELECTOR, ".window-item"), what="ranked windows")
    item = next((b for b in items if float(b.get_attribute("data-start")) > 0), items[0])
    start, end = float(item.get_attribute("data-start")), float(item.get_attribute("data-end"))
    wait_for(lambda: drv.execute_script("return document.getElementById('player').readyState >= 1"),
             what="video metadata")
    assert current_time(drv, "player") < start or start == 0
    item.click()
    wait_for(lambda: start - 0.05 <= current_time(drv, "player") <= end + 0.3, what=f"player inside {start}-{end}")
    assert "active" in item.get_attribute("class")
    drv.save_screenshot(str(shots / name))
    return start, end


def test_ground_upload_and_search_in_chromium(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from locvtp.serve import media

    drv = browser
    shots = tmp_path / "screenshots"
    shots.mkdir()
    drv.get(server + "/")
    assert drv.execute_script("return document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.42E01E\"')")
    sel = wait_for(lambda: Select(drv.find_element(By.ID, "video-select"))
                   if any(o.get_attribute("value") == "grd_00003.mp4"
                          for o in drv.find_elements(By.CSS_SELECTOR, "#video-select option")) else None,
                   what="the video list")
    sel.select_by_value("grd_00003.mp4")
    q = drv.find_element(By.ID, "query")
    q.clear()
    q.send_keys(QUERY)
    drv.find_element(By.ID, "ground-button").click()
    wait_for(lambda: drv.find_elements(By.CSS_SELECTOR, "#curve svg polyline"), what="the score curve")
    assert len(drv.find_elements(By.CSS_SELECTOR, "#heatmap svg rect")) >= 14 * 5  # clips x words cells
    click_window_and_check(drv, shots, "ground.png")
    assert drv.find_element(By.ID, "error").get_attribute("hidden") is not None  # no error shown

    # a bad query: a clear message on the page, nothing else breaks
    q.clear()
    drv.find_element(By.ID, "ground-button").click()
    err = wait_for(lambda: drv.find_element(By.ID, "error").text, what="the error message")
    assert "empty" in err

    # a non-video upload: the server's message on the page
    junk = tmp_path / "notes.mp4"
    junk.write_text("not a video\n" * 100)
    drv.find_element(By.ID, "upload-input").send_keys(str(junk))
    err = wait_for(lambda: "not a video" in drv.find_element(By.ID, "error").text and
                   drv.find_element(By.ID, "error").text, what="the upload error")
    assert "notes.mp4" in err

    # an AVI (MPEG-4 Part 2): uploaded with progress, transcoded for playback, grounded, played
    avi = media.write_test_video(tmp_path / "moving.avi", seconds=8.0)
    drv.find_element(By.ID, "upload-input").send_keys(str(avi))
    wait_for(lambda: "ready" in drv.find_element(By.ID, "upload-text").text, timeout=60, what="upload ready")
    wait_for(lambda: Select(drv.find_element(By.ID, "video-select")).first_selected_option.text.endswith("moving.avi"),
             what="the upload selected")
    q.send_keys(QUERY)
    drv.find_element(By.ID, "ground-button").click()
    wait_for(lambda: drv.find_elements(By.CSS_SELECTOR, "#curve svg polyline"), what="the upload's curve")
    click_window_and_check(drv, shots, "ground_upload.png")

    # search: moments with thumbnails; a click plays the moment
    drv.get(server + "/search")
    box = drv.find_element(By.ID, "search-query")
    box.send_keys(QUERY)
    drv.find_element(By.ID, "search-button").click()
    imgs = wait_for(lambda: drv.find_elements(By.CSS_SELECTOR, ".result-card img.thumb"), what="search results")
    assert len(imgs) >= 3
    wait_for(lambda: all(drv.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)
                         for i in imgs), what="thumbnails loaded")
    card = drv.find_elements(By.CSS_SELECTOR, ".result-card")[0]
    start, end = float(card.get_attribute("data-start")), float(card.get_attribute("data-end"))
    card.click()
    wait_for(lambda: start - 0.05 <= current_time(drv, "search-player") <= end + 0.3, what="search player")
    drv.save_screenshot(str(shots / "search.png"))
    drv.get(server + "/api/docs")
    wait_for(lambda: len(drv.find_elements(By.CSS_SELECTOR, ".endpoint")) >= 6, what="the API docs")
    drv.save_screenshot(str(shots / "api_docs.png"))
    logs = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"  # CSP violations, missing files
            and "/api/" not in e.get("message", "")]  # the 4xx answers above are logged by the browser
    assert not logs, logs
    for f in ("ground.png", "ground_upload.png", "search.png", "api_docs.png"):
        assert (shots / f).stat().st_size > 5000
