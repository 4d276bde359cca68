"""The operator console in a real browser: Debian's Chromium, headless, through chromedriver.

Environment: AIRLOCK_API (the control plane's base URL), AIRLOCK_ADMIN_TOKEN (an admin API key),
UPSTREAM_URL (the testkit's OpenAI imitation), SCREENSHOTS (a directory for PNGs), CHROMIUM and
CHROMEDRIVER (the binaries). Signs in, creates a secret, a preset gateway and a devbox in the
console, sends a request through the data plane with the official OpenAI SDK, sees it and its
cost in the console, rotates the secret, shuts the devbox down, checks that hostile names render
as text and run nothing, that POSTs without the CSRF token or from another origin are refused,
that a launcher key gets no change buttons and a revoked key's session ends, and signs out; at
1280x800 and 390x844. Prints one JSON line of what it saw; the Rust test checks the rest over
the API.
"""
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

import openai
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

API = os.environ["AIRLOCK_API"]
ADMIN = os.environ["AIRLOCK_ADMIN_TOKEN"]
UPSTREAM = os.environ["UPSTREAM_URL"]
SHOTS = os.environ["SCREENSHOTS"]
SECRET_1 = "sk-console-first-value-0123456789"
SECRET_2 = "sk-console-rotated-value-9876543210"
XSS_GATEWAY = "<script>alert(1)</script>"
XSS_META = '<img src=x onerror="alert(2);document.title=\'pwned\'">'
seen = {}


def rest(method, path, body=None, token=ADMIN):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(API + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req) as resp:
        return json.load(resp)


def raw_post(path, fields, cookie, origin=None):
    """A form POST outside the browser, with the session cookie; returns the status."""
    req = urllib.request.Request(
        API + path, data=urllib.parse.urlencode(fields).encode(), method="POST"
    )
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    req.add_header("Cookie", "airlock_console=" + cookie)
    if origin:
        req.add_header("Origin", origin)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(req) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


options = webdriver.ChromeOptions()
options.binary_location = os.environ["CHROMIUM"]
for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]:
    options.add_argument(arg)
driver = webdriver.Chrome(service=Service(os.environ["CHROMEDRIVER"]), options=options)
driver.set_window_size(1280, 800)
driver.implicitly_wait(0)


def go(path):
    driver.get(API + path)


def path():
    return urllib.parse.urlparse(driver.current_url).path


def text():
    return driver.find_element(By.TAG_NAME, "body").text


def fill(element_id, value):
    el = driver.find_element(By.ID, element_id)
    el.clear()
    el.send_keys(value)


def click(element):
    """Clicks something that loads a new page, and waits until the new page is there."""
    # A mark on the old page's window: the new page's window does not have it. Asking
    # an element of the old page whether it is stale races the navigation (chromedriver
    # may answer with other errors while the document is being replaced).
    driver.execute_script("window.__airlockOldPage = true")
    element.click()
    deadline = time.time() + 30
    while True:
        try:
            if driver.execute_script("return window.__airlockOldPage !== true"):
                break
        except WebDriverException:
            pass  # between documents
        assert time.time() < deadline, "no new page after a click"
        time.sleep(0.05)
    wait_for("the page to load", lambda: driver.execute_script("return document.readyState") == "complete")


def submit(form_id):
    click(driver.find_element(By.CSS_SELECTOR, "#" + form_id + " button[type=submit]"))


def no_alert(where):
    try:
        alert = driver.switch_to.alert
        raise AssertionError(f"{where}: an alert ran: {alert.text}")
    except NoAlertPresentException:
        pass
    assert driver.title != "pwned", where
    assert not driver.find_elements(By.CSS_SELECTOR, "main img"), where


def shot(name):
    w = driver.get_window_size()["width"]
    driver.save_screenshot(os.path.join(SHOTS, f"{name}-{w}.png"))


def wait_for(what, check, timeout=30):
    deadline = time.time() + timeout
    while True:
        if check():
            return
        assert time.time() < deadline, f"timed out waiting for {what}: {text()[:2000]}"
        time.sleep(0.5)


def check_no_secret_values():
    source = driver.page_source
    for value in [SECRET_1, SECRET_2, ADMIN]:
        assert value not in source, f"a secret value or key is in {path()}"
    assert "gws_" not in source, f"a gateway token is in {path()}"


# No session: every page sends to sign-in.
for p in ["/ui/", "/ui/secrets", "/ui/devboxes/dbx_x"]:
    go(p)
    assert path() == "/ui/sign-in", (p, driver.current_url)
shot("sign-in")

# A wrong key is refused; the admin key signs in.
fill("api_key", "ak_not-a-key")
submit("sign-in")
assert "invalid API key" in text(), text()
fill("api_key", ADMIN)
submit("sign-in")
assert path() == "/ui/", driver.current_url
session = driver.get_cookie("airlock_console")
assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/ui", session
assert ADMIN not in session["value"]

# A secret, a gateway from the OpenAI preset pointed at the imitation, and a hostile one.
go("/ui/secrets")
fill("secret-name", "OPENAI_KEY")
fill("secret-value", SECRET_1)
submit("create-secret")
assert "Created." in text() and "OPENAI_KEY" in text(), text()
check_no_secret_values()

go("/ui/gateways")
fill("gateway-name", "openai-console")
driver.find_element(By.CSS_SELECTOR, "#gateway-provider option[value=openai]").click()
fill("gateway-endpoint", UPSTREAM + "/v1")
fill("gateway-description", "made in the console")
submit("create-gateway")
assert path().startswith("/ui/gateways/gwc_"), driver.current_url
assert "openai-console" in text() and "made in the console" in text()
# Edit it: the description changes, the endpoint stays.
fill("gateway-edit-description", "edited in the console")
submit("edit-gateway")
assert driver.find_element(By.ID, "notice").text == "Saved."
assert "edited in the console" in text() and (UPSTREAM + "/v1") in text(), text()
go("/ui/gateways")
fill("gateway-name", XSS_GATEWAY)
fill("gateway-description", XSS_META)
submit("create-gateway")
no_alert("gateway page")
assert driver.find_element(By.ID, "gateway-name-shown").text == XSS_GATEWAY
go("/ui/gateways")
no_alert("gateway list")
assert XSS_GATEWAY in text() and XSS_META in text(), text()
seen["xss_gateway_shown"] = True

# A router over the preset gateway: its backends' live status arrives through console.js.
router = rest("POST", "/v1/gateway-configs", {
    "name": "router-console", "type": "router",
    "backends": [{"gateway": "openai-console", "secret": "OPENAI_KEY"}],
})

# A devbox registered in the console, with hostile metadata.
go("/ui/devboxes")
fill("devbox-name", "console-box")
fill("devbox-addresses", "127.0.0.1")
fill("devbox-metadata", "note=" + XSS_META)
submit("register-devbox")
assert path().startswith("/ui/devboxes/dbx_"), driver.current_url
console_box = path().rsplit("/", 1)[1]
no_alert("devbox page")
assert ("note: " + XSS_META) in text(), text()
check_no_secret_values()
seen["console_box"] = console_box

# Traffic through the data plane from a devbox bound to the console's gateway and secret.
box = rest("POST", "/v1/devboxes", {
    "name": "traffic-box", "source_addresses": ["127.0.0.1"],
    "limits": {"requests_per_day": 100},
    "gateways": {"OPENAI": {"gateway": "openai-console", "secret": "OPENAI_KEY"},
                 "ROUTED": {"gateway": "router-console"}},
})
env = box["environment"]
client = openai.OpenAI(base_url=env["OPENAI_URL"], api_key=env["OPENAI"], max_retries=0)
reply = client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "hello console"}]
)
assert reply.choices[0].message.content, reply
routed = openai.OpenAI(base_url=env["ROUTED_URL"], api_key=env["ROUTED"], max_retries=0)
routed.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "via router"}])

go("/ui/")
wait_for(
    "the request in the overview",
    lambda: go("/ui/") or (
        "gpt-4o-mini" in driver.find_element(By.ID, "recent-requests").text
        and "$0." in driver.find_element(By.ID, "recent-requests").text
    ),
)
recent = driver.find_element(By.ID, "recent-requests").text
seen["overview_request"] = [line for line in recent.splitlines() if box["id"] in line][:1]
seen["overview_total_requests"] = driver.find_element(By.ID, "total-requests").text
wait_for("the charts", lambda: len(driver.find_elements(By.CSS_SELECTOR, ".uplot")) >= 2)
shot("overview")

go("/ui/devboxes/" + box["id"])
tokens = driver.find_element(By.ID, "tokens").text
assert "OPENAI" in tokens and "active" in tokens, tokens
seen["token_uses"] = tokens
limits = driver.find_element(By.ID, "limits").text
assert "requests_per_day" in limits and "100" in limits, limits
check_no_secret_values()
shot("devbox")

go("/ui/gateways/" + router["id"])
wait_for(
    "the live backends",
    lambda: driver.find_element(By.ID, "live-status").text.startswith("updated")
    and "openai-console" in driver.find_element(By.ID, "live-backends").text
    and "gpt-4o-mini" in driver.find_element(By.ID, "routing-log").text,
)
seen["live_backends"] = driver.find_element(By.ID, "live-backends").text
shot("router")

go("/ui/usage")
wait_for("the usage charts", lambda: len(driver.find_elements(By.CSS_SELECTOR, ".uplot")) >= 6)
assert "gpt-4o-mini" in driver.find_element(By.ID, "usage").text
shot("usage")

go("/ui/audit?devbox_id=" + box["id"])
audit = driver.find_element(By.ID, "audit-requests").text
assert "gpt-4o-mini" in audit and "/chat/completions" in audit, audit
go("/ui/audit?devbox_id=dbx_nothing")
assert "nothing yet" in driver.find_element(By.ID, "audit-requests").text
go("/ui/audit?action=gateway_config.create")
events = driver.find_element(By.ID, "audit-events").text
assert "gateway_config.create" in events and "devbox.register" not in events, events
shot("audit")

# Rotate the secret: a new version, and no value on the page.
go("/ui/secrets")
row = driver.find_element(By.XPATH, "//table[@id='secrets']//tr[td[1][text()='OPENAI_KEY']]")
assert row.find_elements(By.TAG_NAME, "td")[1].text == "1", row.text
row.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys(SECRET_2)
click(row.find_element(By.CSS_SELECTOR, "button"))
assert "Rotated" in driver.find_element(By.ID, "notice").text
row = driver.find_element(By.XPATH, "//table[@id='secrets']//tr[td[1][text()='OPENAI_KEY']]")
seen["secret_version"] = row.find_elements(By.TAG_NAME, "td")[1].text
check_no_secret_values()
shot("secrets")

# Shut the console's devbox down from the list.
go("/ui/devboxes")
row = driver.find_element(By.XPATH, f"//table[@id='devboxes']//tr[td/a[contains(@href, '{console_box}')]]")
click(row.find_element(By.CSS_SELECTOR, "button.danger"))
seen["devbox_status"] = driver.find_element(By.ID, "devbox-status").text
no_alert("devbox after shutdown")
shot("devboxes")

# CSRF: without the token, with a wrong one, and from another origin, a POST is refused.
cookie = driver.get_cookie("airlock_console")["value"]
csrf = driver.find_element(By.CSS_SELECTOR, "input[name=csrf]").get_attribute("value")
seen["csrf"] = {
    "missing": raw_post("/ui/secrets", {"name": "CSRF_MISSING", "value": "x"}, cookie),
    "wrong": raw_post("/ui/secrets", {"name": "CSRF_WRONG", "value": "x", "csrf": "AAAA"}, cookie),
    "cross_origin": raw_post(
        "/ui/secrets", {"name": "CSRF_ORIGIN", "value": "x", "csrf": csrf}, cookie,
        origin="https://evil.example",
    ),
    "fetch_without_token": driver.execute_script(
        "return fetch('/ui/secrets', {method: 'POST', redirect: 'manual', body: new "
        "URLSearchParams({name: 'CSRF_FETCH', value: 'x'})}).then(r => r.status)"
    ),
    "with_token": raw_post("/ui/secrets", {"name": "CSRF_OK", "value": "x", "csrf": csrf}, cookie),
}
# A forged cookie is no session.
seen["forged_cookie"] = raw_post("/ui/sign-out", {"csrf": csrf}, cookie[:-4] + "AAAA")

# Phone-sized: every page fits the width (tables scroll inside their cards).
driver.set_window_size(390, 844)
widths = {}
for name, p in [("overview", "/ui/"), ("gateways", "/ui/gateways"), ("secrets", "/ui/secrets"),
                ("devboxes", "/ui/devboxes"), ("usage", "/ui/usage"), ("audit", "/ui/audit"),
                ("router", "/ui/gateways/" + router["id"])]:
    go(p)
    time.sleep(0.3)
    widths[name] = driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    shot(name)
seen["phone_widths"] = widths
driver.set_window_size(1280, 800)
go("/ui/gateways")
shot("gateways")

# Sign out: the cookie is gone and pages send to sign-in again.
go("/ui/")
click(driver.find_element(By.ID, "sign-out"))
assert path() == "/ui/sign-in", driver.current_url
assert driver.get_cookie("airlock_console") is None
go("/ui/usage")
seen["after_sign_out"] = path()

# A launcher key sees devboxes without change buttons; once revoked, its session ends.
launcher = rest("POST", "/v1/api-keys", {"name": "console-launcher", "scope": "launcher"})
fill("api_key", launcher["key"])
submit("sign-in")
go("/ui/devboxes")
seen["launcher_buttons"] = len(driver.find_elements(By.CSS_SELECTOR, "button.danger"))
go("/ui/secrets")
seen["launcher_secrets"] = "needs an admin API key" in text()
rest("POST", f"/v1/api-keys/{launcher['id']}/revoke", {})
go("/ui/devboxes")
seen["after_revoke"] = path()

driver.quit()
print(json.dumps(seen))
