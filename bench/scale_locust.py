"""Mixed load for bench/scale.sh (Locust): agents sign in and compose
messages with a 100 KB attachment; customers take pickup links from the
SMTP sink's spool, visit them and verify with the access code, read the
message and download the file. Every request goes to a random instance:
sessions must work on both (no sticky sessions)."""
import os
import random
import re
import time

from locust import HttpUser, between, task

HOSTS = os.environ["SCALE_HOSTS"].split(",")
SPOOL = os.environ["SCALE_SPOOL"]
COMPOSED = os.environ["SCALE_COMPOSED"]
AGENT = os.environ["SCALE_AGENT"]
PASSWORD = os.environ["SCALE_PASSWORD"]
ACCESS_CODE = "Bench-Access-Code-2026"
ATTACHMENT = os.urandom(100 * 1024)
LINK = re.compile(rb"/p/[A-Za-z0-9_-]{43}")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def instance():
    return random.choice(HOSTS)


def customer_address():
    return "10.%d.%d.%d" % (random.randrange(256), random.randrange(256), random.randrange(1, 255))


def take_link():
    """Claims one unread pickup email from the spool (rename is atomic)."""
    for name in sorted(os.listdir(SPOOL)):
        if not name.endswith(".eml"):
            continue
        path = os.path.join(SPOOL, name)
        try:
            os.rename(path, path + ".taken")
        except OSError:
            continue  # another customer took it
        with open(path + ".taken", "rb") as f:
            found = LINK.search(f.read())
        if found:
            return found.group(0).decode()
    return None


class Agent(HttpUser):
    weight = 1
    wait_time = between(0.5, 1.5)
    host = HOSTS[0]

    def on_start(self):
        page = self.client.get(instance() + "/sign-in", name="sign-in page")
        token = CSRF.search(page.text).group(1)
        with self.client.post(
            instance() + "/sign-in",
            data={"csrf": token, "email": AGENT, "password": PASSWORD},
            name="sign-in",
            allow_redirects=False,
            catch_response=True,
        ) as r:
            if r.status_code != 303:
                r.failure(f"sign-in: {r.status_code}")

    @task
    def compose(self):
        page = self.client.get(instance() + "/compose", name="compose page")
        found = CSRF.search(page.text)
        if not found:
            return
        fields = [
            ("csrf", found.group(1)),
            ("recipient", "bench.customer@example.org"),
            ("body", "Your statement is attached."),
            ("expiry_hours", "48"),
            ("method", "access_code"),
            ("access_code", ACCESS_CODE),
            ("known_fact", ""),
            ("retention", "keep"),
        ]
        with self.client.post(
            instance() + "/compose",
            data=fields,
            files=[("attachments", ("statement.pdf", ATTACHMENT, "application/pdf"))],
            name="compose",
            allow_redirects=False,
            catch_response=True,
        ) as r:
            location = r.headers.get("location", "")
            if r.status_code != 303 or not location.startswith("/messages/"):
                r.failure(f"compose: {r.status_code}")
                return
            message_id = location[len("/messages/"):].split("?")[0]
            with open(COMPOSED, "a") as f:
                f.write(message_id + "\n")


class Customer(HttpUser):
    weight = 2
    wait_time = between(0.2, 1.0)
    host = HOSTS[0]

    @task
    def pick_up(self):
        link = take_link()
        if link is None:
            time.sleep(0.2)
            return
        self.client.cookies.clear()
        # Each pickup is another customer: the load balancer in front
        # (a trusted proxy, as in production) names their address, so the
        # per-address limits apply per customer as they would live.
        self.client.headers["X-Forwarded-For"] = customer_address()
        self.client.get(instance() + link, name="landing")
        with self.client.post(
            instance() + link + "/verify",
            data={"access_code": ACCESS_CODE},
            name="verify",
            allow_redirects=False,
            catch_response=True,
        ) as r:
            location = r.headers.get("location", "")
            if r.status_code != 303 or not location.startswith("/pickup/"):
                r.failure(f"verify: {r.status_code}")
                return
        with self.client.get(instance() + location, name="message", catch_response=True) as r:
            if "Your statement is attached." not in r.text:
                r.failure("message body missing")
        with self.client.get(
            instance() + location + "/files/1", name="download", catch_response=True
        ) as r:
            if r.content != ATTACHMENT:
                r.failure("download differs")
