"""The README's screenshots of a class (1280×720, the shipped translator): the teacher's screen after "Teach this
class", a student following, and the reveal on the teacher's screen after three students answered.

Not a test (pytest collects test_*.py only): run `python -m tests.browser.class_screenshots` from the repository root.
"""

from __future__ import annotations

from urllib.parse import urlencode

from playwright.sync_api import sync_playwright

from server import classroom
from tests.browser import ROOT, launch_chromium, running_app, wait_idle, wait_plot
from transformer.checkpoints import catalog

SHOTS = ROOT / "docs" / "screenshots"
SCREEN = {"width": 1280, "height": 720}
VIEW = {"text": "the big dog near the old tables sees the cats .", "kind": "cross", "layer": "1", "head": "1"}


def open_page(browser, url: str):
    page = browser.new_context(viewport=SCREEN).new_page()
    page.set_default_timeout(90_000)
    page.goto(url)
    wait_plot(page, "attn_heatmap")
    wait_idle(page)
    return page


def shoot(page, name: str) -> None:
    """A screenshot once every image (the QR codes) has loaded: `wait_idle` does not wait for them."""
    page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(SHOTS / name))


def main() -> None:
    # A classroom's network address for the link and QR code (students cannot open 127.0.0.1 on their laptops).
    env = {catalog.ASSETS_ENV: "", catalog.NO_MINILM_ENV: "1", classroom.PUBLIC_URL_ENV: "http://192.168.1.20:8501"}
    with running_app(env) as url, sync_playwright() as pw:
        browser = launch_chromium(pw)
        teacher = open_page(browser, f"{url}/attention?{urlencode(VIEW)}")
        teacher.locator(".st-key-class_teach button:visible").first.click()
        teacher.wait_for_function("() => new URLSearchParams(location.search).has('teach')")
        wait_idle(teacher)
        shoot(teacher, "class_teacher.png")
        code = teacher.evaluate("() => new URLSearchParams(location.search).get('teach')")

        students = [open_page(browser, f"{url}/?follow={code}") for _ in range(3)]
        shoot(students[0], "class_student.png")

        teacher.locator("[data-testid=stSidebar] [data-testid=stPopover] button", has_text="Ask the class").click()
        teacher.locator(".st-key-ask_go button").click()
        wait_idle(teacher)
        teacher.keyboard.press("Escape")
        caption = teacher.get_by_text("to the class")
        caption.wait_for()
        number = int(caption.inner_text().split()[1])
        for student, choice in zip(students, (2, 2, 3)):
            pills = student.locator(f".st-key-q_{number}_pick button")
            pills.first.wait_for()
            pills.nth(choice).click()
            wait_idle(student)
        teacher.get_by_text("3 answered").wait_for()
        teacher.locator(".st-key-class_show_code label").click()  # the code box off: the reveal fits the screen
        wait_idle(teacher)
        teacher.locator(".st-key-q_reveal button").click()
        wait_plot(teacher, f"q_reveal_{number}")
        wait_idle(teacher)
        teacher.locator(f".st-key-q_reveal_{number}").scroll_into_view_if_needed()
        shoot(teacher, "class_reveal.png")
        browser.close()


if __name__ == "__main__":
    main()
