"""Open the HTML report in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium) and check
that the metrics table and every image render. Skips where the browser is missing, unless CI is set: then fails."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from report_fakes import fake_metrics, fake_report

CHROMEDRIVER = "/usr/bin/chromedriver"
BROWSER_NAMES = ("chromium", "chromium-browser")


def _browser_or_skip() -> tuple[str, str]:
    """(chromium binary, chromedriver) or skip with the reason; under CI=... a missing piece fails the test."""
    browser = next((p for p in map(shutil.which, BROWSER_NAMES) if p), None)
    missing = [name for name, ok in (("chromium", browser), ("chromedriver", os.access(CHROMEDRIVER, os.X_OK)))
               if not ok]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        reason = (f"headless browser test needs {', '.join(missing)}; install with scripts/ensure-browser.sh "
                  "(Debian packages chromium chromium-driver)")
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so this test may not skip: {reason}")
        pytest.skip(reason)
    return str(browser), CHROMEDRIVER


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    browser, driver_path = _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager download a browser or driver
    report = fake_report(tmp_path / "results")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get(report.resolve().as_uri())
        assert driver.title == "diffguard report: fake <run> & co"
        table = driver.find_element(By.ID, "metrics")
        assert table.is_displayed()
        rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert len(rows) == len(fake_metrics())
        assert [c.text for c in rows[5].find_elements(By.TAG_NAME, "td")][:4] == ["DiffGuard", "far-digits", "far",
                                                                                 "81.00"]
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt]);")
        assert len(images) == 9
        broken = [alt for complete, width, height, alt in images if not (complete and width > 0 and height > 0)]
        assert not broken, f"images that did not decode: {broken}"
    finally:
        driver.quit()


def test_missing_browser_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs chromium"):
        _browser_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        _browser_or_skip()
