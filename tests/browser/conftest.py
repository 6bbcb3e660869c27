"""The harness of tests/browser/test_e2e.py (Daphne on the test database, headless
Chromium, the screenshots folder) for every browser test module."""

from tests.browser.test_e2e import browser, server, shots_dir  # noqa: F401 (fixtures)
