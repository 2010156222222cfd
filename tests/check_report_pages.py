"""Open report.html / compare.html pages in headless Chromium and check what a reader's browser sees.

    python tests/check_report_pages.py runs/NAME/report.html [runs/compare/compare.html ...] [--width 1400]

For every page, at a window ``--width`` px wide (default 1,400): no console error or uncaught exception, no request
that leaves the file (every picture and style is inline), every <img> decodes to a non-empty picture and has alt text,
nothing runs past the right edge (the page does not scroll sideways; wide tables and code blocks scroll inside their
own box), and a command (``pre.command``) wraps instead of scrolling, so all of it can be read and copied. Prints one
line per page and exits 1 when a check fails, 2 when Chromium is missing.

Talks to Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``): no extra Python package and no
network port. The tests run it on a generated report when Chromium is installed
(``apt-get install chromium``; ``$CHROMIUM`` names another binary).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHECKS_JS = r"""
(async () => {
  const images = Array.from(document.images);
  const decoded = await Promise.all(images.map(img => img.decode().then(() => true, () => false)));
  const width = document.documentElement.clientWidth;
  const overflowing = [];
  for (const el of document.querySelectorAll('body *')) {
    const style = getComputedStyle(el);
    if (style.display === 'none' || el.closest('details:not([open])') && el.tagName !== 'SUMMARY') continue;
    const box = el.getBoundingClientRect();
    if (box.width > 0 && box.right > width + 0.5) {
      let inside = false;  // inside a box that scrolls by itself (pre, .scroll)
      for (let p = el.parentElement; p; p = p.parentElement) {
        const s = getComputedStyle(p);
        if (['auto', 'scroll'].includes(s.overflowX) && p.getBoundingClientRect().right <= width + 0.5) {
          inside = true; break;
        }
      }
      if (!inside) overflowing.push(el.tagName.toLowerCase() + (el.className ? '.' + el.className : '') +
                                   ' right=' + Math.round(box.right) + ' text=' +
                                   (el.textContent || '').trim().slice(0, 60));
    }
  }
  return JSON.stringify({
    images: images.map((img, i) => ({alt: img.alt, ok: decoded[i] && img.naturalWidth > 0 && img.naturalHeight > 0})),
    scrollWidth: document.documentElement.scrollWidth, clientWidth: width,
    overflowing: overflowing.slice(0, 10), title: document.title,
    unwrapped: Array.from(document.querySelectorAll('pre.command'))
      .filter(p => p.scrollWidth > p.clientWidth + 1).map(p => (p.textContent || '').trim().slice(0, 60)),
    headings: Array.from(document.querySelectorAll('h2')).length,
  });
})()
"""


def chromium_binary() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class DevTools:
    """A minimal DevTools-protocol client over Chromium's pipe (fd 3: commands in, fd 4: replies out)."""

    def __init__(self, binary: str, width: int, height: int = 900):
        self.profile = tempfile.mkdtemp(prefix="protosphere-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        args = [
            binary,
            "--headless=new",
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-sync",
            "--disable-background-networking",
            "--disable-component-update",
            "--metrics-recording-only",
            f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}",
            "--proxy-server=127.0.0.1:9",
            "--proxy-bypass-list=<-loopback>",
            "about:blank",
        ]

        def child_fds():  # the pipe ends Chromium expects as fd 3 and fd 4 (the pipes may already sit on 3-6)
            read_end, write_end = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=child_fds,
            close_fds=False,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.time() + timeout
        while time.time() < deadline:
            reply = self._read(deadline)
            if reply is None:
                break
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)
        raise TimeoutError(f"Chromium did not answer {method} within {timeout} s")

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.time() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while time.time() < deadline:
            event = self._read(deadline)
            if event is None:
                break
            self.events.append(event)
            if event.get("method") == method:
                return event
        raise TimeoutError(f"no {method} within {timeout} s")

    def _read(self, deadline: float) -> dict | None:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.time()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                return None
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        try:
            self.process.terminate()
            self.process.wait(timeout=10)
        except Exception:  # noqa: BLE001
            self.process.kill()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


def check_page(tools: DevTools, path: Path, width: int) -> list[str]:
    """Problems found on one page (an empty list when it passes)."""
    target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        tools.send(f"{domain}.enable", session=session)
    tools.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        session=session,
    )
    tools.events.clear()
    url = path.resolve().as_uri()
    tools.send("Page.navigate", {"url": url}, session=session)
    tools.wait_for("Page.loadEventFired", timeout=60)
    result = tools.send(
        "Runtime.evaluate",
        {"expression": CHECKS_JS, "awaitPromise": True, "returnByValue": True},
        session=session,
        timeout=60,
    )
    if "exceptionDetails" in result:
        return [f"the check script failed: {result['exceptionDetails'].get('text')}"]
    facts = json.loads(result["result"]["value"])
    problems = []
    for event in tools.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            problems.append(f"console error: {text[:200]}")
        elif method == "Runtime.exceptionThrown":
            problems.append(f"uncaught exception: {params.get('exceptionDetails', {}).get('text')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            problems.append(f"browser error: {params['entry'].get('text', '')[:200]}")
        elif method == "Network.requestWillBeSent":
            requested = params.get("request", {}).get("url", "")
            if not (requested.startswith("data:") or requested == url or requested.startswith("about:")):
                problems.append(f"external request: {requested[:200]}")
    for i, image in enumerate(facts["images"]):
        if not image["ok"]:
            problems.append(f"image {i + 1} ({image['alt'] or 'no alt'}) does not decode")
        if not image["alt"].strip():
            problems.append(f"image {i + 1} has no alt text")
    if facts["scrollWidth"] > facts["clientWidth"] or facts["overflowing"]:
        problems.append(
            f"content runs past the right edge at {width} px (page {facts['scrollWidth']} px wide): "
            + "; ".join(facts["overflowing"])
        )
    for text in facts["unwrapped"]:
        problems.append(f"a command does not wrap (it scrolls sideways): {text}")
    tools.send("Target.closeTarget", {"targetId": target})
    check_page.last_facts = facts
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="+", type=Path, help="report.html / compare.html files")
    parser.add_argument("--width", type=int, default=1400, help="window width in px (default 1400)")
    args = parser.parse_args(argv)
    binary = chromium_binary()
    if binary is None:
        print("chromium not found: apt-get install chromium (or set $CHROMIUM)", file=sys.stderr)
        return 2
    tools = DevTools(binary, args.width)
    failed = False
    try:
        for page in args.pages:
            problems = check_page(tools, page, args.width)
            facts = check_page.last_facts
            status = "ok" if not problems else "FAIL"
            print(
                f"{status}  {page}  ({len(facts['images'])} images, {facts['headings']} sections, "
                f"{facts['scrollWidth']} px wide at {args.width} px)"
            )
            for problem in problems:
                print(f"      {problem}")
            failed |= bool(problems)
    finally:
        tools.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
