"""Drives tunnel-server's status page in headless Chromium (Debian's chromium and
chromedriver, selenium from the tests' virtualenv), as an operator would.

    status_page.py create URL ADMIN_TOKEN NAME HOSTNAME   logs in, creates tunnel NAME, adds a
                                                          route HOSTNAME, prints the token
    status_page.py connected URL ADMIN_TOKEN NAME SHOT    logs in, waits until NAME's agent is
                                                          listed, saves a screenshot to SHOT

Every wait is bounded (30 s) and polls the page; nothing sleeps for a fixed time.
"""

import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    # The machine's chromedriver: selenium never looks for (or downloads) one of its own.
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def log_in(driver, url, token):
    driver.get(url)
    # The page draws its tables again when what they show changes: an element found just
    # before is then stale, and looked up again.
    wait = WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,))
    field = wait.until(ready.visibility_of_element_located((By.ID, "admin-token")))
    field.send_keys(token)
    driver.find_element(By.ID, "login-button").click()
    wait.until(ready.visibility_of_element_located((By.ID, "manage")))
    return wait


def create(url, token, name, hostname):
    driver = browser()
    try:
        wait = log_in(driver, url, token)
        driver.find_element(By.ID, "tunnel-name").send_keys(name)
        driver.find_element(By.ID, "create-button").click()
        shown = wait.until(ready.visibility_of_element_located((By.ID, "new-token")))
        wait.until(lambda d: shown.text.startswith("tun1_"))
        printed = shown.text
        row = f'tr.stored[data-name="{name}"]'
        wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, row)))

        def add_route(d):
            field = d.find_element(By.CSS_SELECTOR, f"{row} input.route-host")
            field.send_keys(hostname)
            d.find_element(By.CSS_SELECTOR, f"{row} button.add-route").click()
            return True

        wait.until(add_route)
        wait.until(lambda d: hostname in d.find_element(By.CSS_SELECTOR, row).text)
        print(printed)
    finally:
        driver.quit()


def connected(url, token, name, shot):
    driver = browser()
    try:
        wait = log_in(driver, url, token)
        wait.until(lambda d: any(
            name_cell_has_agent(row) for row in d.find_elements(By.CSS_SELECTOR, "tr.tunnel")
        ))
        driver.save_screenshot(shot)
    finally:
        driver.quit()


def name_cell_has_agent(row):
    return bool(row.find_elements(By.CSS_SELECTOR, "span.up.agent"))


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    {"create": create, "connected": connected}[mode](*args)
