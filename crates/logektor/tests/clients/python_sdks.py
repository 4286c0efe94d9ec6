"""Sends events through the real Python SDKs, with default settings except the host.

Usage: python_sdks.py HOST WRITE_KEY RUN_ID
Prints, as JSON, the events each SDK was asked to send, for the Rust test to look up.
"""
import json
import sys
import time

HOST, KEY, RUN = sys.argv[1], sys.argv[2], sys.argv[3]
expected = []


def expect(sdk, kind, event, user_id=None, anonymous_id=None, properties=None, **columns):
    expected.append(dict(sdk=sdk, type=kind, event=event, user_id=user_id,
                         anonymous_id=anonymous_id, properties=properties or {}, columns=columns))


# Segment: segment-analytics-python.
import segment.analytics as segment

segment.write_key = KEY
segment.host = HOST
user = f"seg-user-{RUN}"
segment.track(user, f"Seg Order Completed {RUN}", {"revenue": 42.5, "currency": "EUR"})
expect("segment", "track", f"Seg Order Completed {RUN}", user_id=user,
       properties={"revenue": 42.5, "currency": "EUR"})
segment.page(user, "Docs", f"Seg Page {RUN}", {"url": "https://docs.example/start?utm_source=py&utm_medium=sdk", "title": "Start"})
expect("segment", "page", f"Seg Page {RUN}", user_id=user,
       page_path="/start", utm_source="py", utm_medium="sdk", page_title="Start")
segment.identify(user, {"email": f"{RUN}@example.com", "plan": "pro"})
expect("segment", "identify", None, user_id=user)
segment.group(user, f"seg-group-{RUN}", {"name": "Acme"})
expect("segment", "group", None, user_id=user, group_id=f"seg-group-{RUN}")
segment.alias(f"seg-old-{RUN}", user)
expect("segment", "alias", None, user_id=user, previous_id=f"seg-old-{RUN}")
segment.screen(user, "App", f"Seg Screen {RUN}")
expect("segment", "screen", f"Seg Screen {RUN}", user_id=user)
segment.track(anonymous_id=f"seg-anon-{RUN}", event=f"Seg Anonymous {RUN}")
expect("segment", "track", f"Seg Anonymous {RUN}", anonymous_id=f"seg-anon-{RUN}")
segment.flush()
segment.shutdown()

# RudderStack: rudder-sdk-python (gzip on by default).
import rudderstack.analytics as rudder

rudder.write_key = KEY
rudder.dataPlaneUrl = HOST
ruser = f"rudder-user-{RUN}"
rudder.track(ruser, f"Rudder Signup {RUN}", {"plan": "free"})
expect("rudder", "track", f"Rudder Signup {RUN}", user_id=ruser, properties={"plan": "free"})
rudder.page(ruser, None, f"Rudder Page {RUN}", {"url": "https://rudder.example/pricing"})
expect("rudder", "page", f"Rudder Page {RUN}", user_id=ruser, page_path="/pricing")
rudder.identify(ruser, {"name": "R"})
expect("rudder", "identify", None, user_id=ruser)
rudder.flush()
rudder.shutdown()

# PostHog: posthog (the project api key is the write key).
from posthog import Posthog

posthog = Posthog(KEY, host=HOST)
puser = f"ph-user-{RUN}"
posthog.capture(f"ph purchase {RUN}", distinct_id=puser, properties={"amount": 3, "sku": "A-1"})
expect("posthog", "track", f"ph purchase {RUN}", user_id=puser, properties={"amount": 3, "sku": "A-1"})
posthog.capture("$pageview", distinct_id=puser, properties={"$current_url": f"https://ph.example/landing-{RUN}?utm_campaign=spring"})
expect("posthog", "page", None, user_id=puser, page_path=f"/landing-{RUN}", utm_campaign="spring")
posthog.set(distinct_id=puser, properties={"email": f"{RUN}@ph.example"})
expect("posthog", "track", "$set", user_id=puser)
posthog.alias(f"ph-old-{RUN}", puser)
expect("posthog", "alias", None, user_id=puser, previous_id=f"ph-old-{RUN}")
posthog.group_identify("company", f"ph-co-{RUN}", {"name": "Acme"}, distinct_id=puser)
expect("posthog", "group", None, user_id=puser, group_id=f"ph-co-{RUN}")
posthog.flush()
posthog.shutdown()

print(json.dumps(expected))
sys.stdout.flush()
