#!/usr/bin/env python3
"""HTTP side of bench/growth.sh (standard library only).

    growth_measure.py signin BASE EMAIL PASSWORD      -> prints a Cookie header
    growth_measure.py staff ROUNDS OUT NAME=BASE=COOKIE_FILE...
    growth_measure.py customer ROUNDS CLIENTS VISITS LANDING OUT NAME=BASE=LINKS_FILE...
    growth_measure.py report RESULTS SMALL LARGE

`staff` and `customer` measure the servers alternately (each operation on
one server, then the other, swapping who goes first every round) and append
one JSON line per sample to OUT: {"size", "op", "value", "unit"}. `report`
prints the table (best of the rounds per operation) and the final line.
"""

import http.client
import json
import re
import sys
import threading
import time
import urllib.parse
from html.parser import HTMLParser

TIMEOUT = 30.0
KNOWN_ADDRESS = "known-customer@example.org"


class Conn:
    """One persistent HTTP/1.1 connection with a fixed Cookie header."""

    def __init__(self, base, cookie=""):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port or 80
        self.cookie = cookie
        self.conn = None

    def get(self, path, headers=None):
        """GET path: (status, body text, seconds, response headers)."""
        h = {"Cookie": self.cookie} if self.cookie else {}
        h.update(headers or {})
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
                self.conn.connect()
            t = time.perf_counter()
            try:
                self.conn.request("GET", path, headers=h)
                r = self.conn.getresponse()
                body = r.read()
            except (http.client.HTTPException, ConnectionError):
                # The server closed an idle keep-alive connection: reconnect once.
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
                continue
            dt = time.perf_counter() - t
            if r.getheader("Connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
            return r.status, body.decode("utf-8", "replace"), dt, r.getheaders()
        raise RuntimeError("unreachable")


def cookies_from(headers):
    out = {}
    for name, value in headers:
        if name.lower() == "set-cookie":
            pair = value.split(";", 1)[0]
            if "=" in pair:
                k, v = pair.split("=", 1)
                out[k.strip()] = v.strip()
    return out


def signin(base, email, password):
    u = urllib.parse.urlsplit(base)
    c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=TIMEOUT)
    c.request("GET", "/sign-in")
    r = c.getresponse()
    page = r.read().decode()
    jar = cookies_from(r.getheaders())
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    if not m:
        sys.exit("sign-in page has no CSRF token")
    form = urllib.parse.urlencode({"csrf": m.group(1), "email": email, "password": password})
    cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
    c.request("POST", "/sign-in", body=form, headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": cookie, "Origin": base, "Sec-Fetch-Site": "same-origin"})
    r = c.getresponse()
    r.read()
    jar.update(cookies_from(r.getheaders()))
    where = r.getheader("Location", "")
    if r.status not in (302, 303) or not where.startswith("/sent"):
        sys.exit(f"sign-in failed: HTTP {r.status} to {where!r} (a second factor must not be required)")
    cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
    status, body, _, _ = Conn(base, cookie).get("/sent")
    if status != 200:
        sys.exit(f"/sent after sign-in: HTTP {status}")
    return cookie


class Links(HTMLParser):
    """The pager's links: <a href=/sent...> with their rel and text."""

    def __init__(self):
        super().__init__()
        self.links, self._open = [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and (a.get("href") or "").startswith("/sent"):
            self._open = {"href": a["href"], "rel": (a.get("rel") or "").lower(), "text": ""}

    def handle_data(self, data):
        if self._open is not None:
            self._open["text"] += data

    def handle_endtag(self, tag):
        if tag == "a" and self._open is not None:
            self._open["text"] = self._open["text"].strip().lower()
            self.links.append(self._open)
            self._open = None


def pager(html):
    p = Links()
    p.feed(html)
    find = lambda rels, words: next(
        (l["href"] for l in p.links
         if any(r in l["rel"].split() for r in rels) or any(w in l["text"] for w in words)), None)
    return {"last": find(["last"], ["last", "oldest"]), "next": find(["next"], ["next", "older"])}


def last_page(conn):
    """The URL of the list's last page: a "last" link if the page has one;
    else, with page numbers, a search on the number; else (cursors) a walk
    along the "next"/"older" links."""
    status, html, _, _ = conn.get("/sent")
    if status != 200:
        sys.exit(f"/sent: HTTP {status}")
    links = pager(html)
    if links["last"]:
        return links["last"], "last link"
    if not links["next"]:
        return "/sent", "one page"
    nxt = links["next"]
    if re.search(r"[?&]page=\d+", nxt):
        at = lambda n: re.sub(r"([?&]page=)\d+", lambda m: m.group(1) + str(n), nxt)
        has_next = lambda n: pager(conn.get(at(n))[1])["next"] is not None
        lo, hi = 2, 4  # lo: known to have a following page or be page 2
        while has_next(hi):
            lo, hi = hi, hi * 2
        while lo < hi:  # the first page without a next one is in (lo, hi]
            mid = (lo + hi) // 2
            if has_next(mid):
                lo = mid + 1
            else:
                hi = mid
        return at(hi), "page-number search"
    url, steps, t = nxt, 1, time.time()
    while True:
        status, html, _, _ = conn.get(url)
        n = pager(html)["next"]
        if status != 200 or not n:
            return url, f"walked {steps} pages in {time.time() - t:.0f} s"
        url, steps = n, steps + 1


def record(out, size, op, value, unit):
    with open(out, "a") as f:
        f.write(json.dumps({"size": size, "op": op, "value": value, "unit": unit}) + "\n")


def servers(specs):
    out = []
    for spec in specs:
        name, base, path = spec.split("=", 2)
        out.append((name, base, path))
    return out


def staff(rounds, out, specs):
    targets = []
    for name, base, cookie_file in servers(specs):
        conn = Conn(base, open(cookie_file).read().strip())
        last, how = last_page(conn)
        print(f"  {name}: last page {last} ({how})", file=sys.stderr)
        status, html, _, _ = conn.get("/sent?q=" + urllib.parse.quote(KNOWN_ADDRESS))
        if KNOWN_ADDRESS not in html:
            print(f"  warning: {name}: search for {KNOWN_ADDRESS} found nothing (HTTP {status})",
                  file=sys.stderr)
        targets.append((name, conn, last))
    ops = [
        ("sent_page1", lambda last: "/sent"),
        ("sent_last_page", lambda last: last),
        ("search_exact", lambda last: "/sent?q=" + urllib.parse.quote(KNOWN_ADDRESS)),
        ("status_locked", lambda last: "/sent?status=locked"),
        ("status_emailed", lambda last: "/sent?status=emailed"),
    ]
    # Rows each page shows: a page of fewer rows is less work, and its
    # figure is not comparable with a full one.
    for op, path in ops:
        shown = []
        for name, conn, last in targets:
            _, html, _, _ = conn.get(path(last))
            rows = html.count('href="/messages/')
            shown.append(f"{name}: {rows}")
        print(f"  rows on {op}: {', '.join(shown)}", file=sys.stderr)
    for r in range(rounds):
        order = targets if r % 2 == 0 else targets[::-1]
        for op, path in ops:
            for name, conn, last in order:
                status, _, dt, _ = conn.get(path(last))
                if status != 200:
                    sys.exit(f"{name} {op}: HTTP {status}")
                record(out, name, op, dt * 1000, "ms")


def p99(samples):
    s = sorted(samples)
    return s[max(0, -(-99 * len(s) // 100) - 1)] if s else float("nan")


def customer(rounds, clients, visits, landing, out, specs):
    targets = []
    for name, base, links_file in servers(specs):
        links = [l.strip() for l in open(links_file) if l.strip()]
        need = rounds * (clients * visits + landing)
        if len(links) < need:
            sys.exit(f"{name}: {len(links)} fresh links, {need} needed")
        paths = [urllib.parse.urlsplit(l).path for l in links]
        targets.append({"name": name, "base": base, "links": paths})
    ua = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) growth-bench"}

    def visit(conn, path):
        status, body, dt, _ = conn.get(path, ua)
        ok = status == 200 and "/verify" in body
        return dt * 1000, ok

    for r in range(rounds):
        order = targets if r % 2 == 0 else targets[::-1]
        for t in order:
            conn = Conn(t["base"])
            first = []
            for _ in range(landing):
                path = t["links"].pop()
                ms, ok = visit(conn, path)
                if not ok:
                    sys.exit(f"{t['name']}: a fresh link did not show the landing page")
                first.append(ms)
                ms, ok = visit(conn, path)  # the same link again: nothing to write
                record(out, t["name"], "landing_repeat", ms, "ms")
            record(out, t["name"], "landing_fresh", min(first), "ms")
        for t in order:
            batches = [[t["links"].pop() for _ in range(visits)] for _ in range(clients)]
            lat, bad, lock = [], [0], threading.Lock()

            def client(paths):
                conn = Conn(t["base"])
                for p in paths:
                    try:
                        ms, ok = visit(conn, p)
                    except OSError:
                        ms, ok = TIMEOUT * 1000, False
                    with lock:
                        lat.append(ms)
                        bad[0] += 0 if ok else 1

            threads = [threading.Thread(target=client, args=(b,)) for b in batches]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            record(out, t["name"], "first_visit_p99", p99(lat), "ms")
            record(out, t["name"], "first_visit_errors", bad[0], "count")


def report(results, small, large):
    best = {}
    for line in open(results):
        s = json.loads(line)
        key = (s["op"], s["size"])
        pick = max if s["unit"] in ("rps", "count") else min
        if s["unit"] == "count":
            pick = lambda a, b: a + b  # errors add up over the rounds
        best[key] = pick(best[key], s["value"]) if key in best else s["value"]
    rows = [
        ("sent_page1", "Agent /sent page 1", True),
        ("sent_last_page", "Agent /sent last page", True),
        ("search_exact", "Agent exact-address search q=", True),
        ("status_locked", "Status filter locked", True),
        ("status_emailed", "Status filter emailed", True),
        ("wrk_sent_rps", "wrk -c8 /sent page 1 (req/s)", False),
        ("landing_fresh", "Customer landing, fresh link", True),
        ("landing_repeat", "Customer landing, visited link", True),
        ("first_visit_p99", "First visit p99, 8 clients", False),
        ("first_visit_errors", "First visit errors (all rounds)", False),
        ("expiry_first_ms", "Expiry pass, first after start", False),
        ("expiry_best_ms", "Expiry pass, warm", False),
        ("audit_verify_s", "sealpost audit verify", False),
        ("keys_rotate_s", "sealpost keys rotate", False),
    ]
    units = {}
    for line in open(results):
        s = json.loads(line)
        units[s["op"]] = s["unit"]
    fmt = lambda v, u: "-" if v is None else (
        f"{v:.0f} req/s" if u == "rps" else f"{v:.0f}" if u == "count"
        else f"{v:.2f} s" if u == "s" else f"{v:.1f} ms")
    print(f"{'Operation':<34} {small:>12} {large:>12} {'growth':>8}")
    worst = 0.0
    for op, label, page in rows:
        a, b = best.get((op, small)), best.get((op, large))
        if a is None and b is None:
            continue
        u = units.get(op, "ms")
        growth = ""
        if a and b:
            g = b / a
            growth = f"{g:.2f}x"
            if page:
                worst = max(worst, g)
        print(f"{label:<34} {fmt(a, u):>12} {fmt(b, u):>12} {growth:>8}")
    rot_a, rot_b = best.get(("keys_rotate_s", small)), best.get(("keys_rotate_s", large))
    rotate = rot_b / rot_a if rot_a and rot_b else float("nan")
    fv = best.get(("first_visit_p99", large), float("nan"))
    print(f"worst_page_growth={worst:.2f} rotate_growth={rotate:.1f} first_visit_p99_ms={fv:.0f}")


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "signin" and len(argv) == 5:
        print(signin(argv[2], argv[3], argv[4]))
    elif cmd == "staff" and len(argv) >= 5:
        staff(int(argv[2]), argv[3], argv[4:])
    elif cmd == "customer" and len(argv) >= 8:
        customer(int(argv[2]), int(argv[3]), int(argv[4]), int(argv[5]), argv[6], argv[7:])
    elif cmd == "report" and len(argv) == 5:
        report(argv[2], argv[3], argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
