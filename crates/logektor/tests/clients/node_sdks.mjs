// Sends events through the real Node SDKs, with default settings except the host.
// Usage: node node_sdks.mjs HOST WRITE_KEY RUN_ID — prints the expected events as JSON.
import { Analytics } from "@segment/analytics-node";
import { PostHog } from "posthog-node";

const [host, key, run] = process.argv.slice(2);
const expected = [];
const expect = (sdk, type, event, fields = {}) =>
  expected.push({ sdk, type, event, user_id: null, anonymous_id: null, properties: {}, columns: {}, ...fields });

// Segment: @segment/analytics-node.
const analytics = new Analytics({ writeKey: key, host });
analytics.on("error", (err) => { console.error("segment error", err); process.exitCode = 1; });
const user = `node-seg-user-${run}`;
analytics.track({ userId: user, event: `Node Seg Checkout ${run}`, properties: { items: 2, coupon: "X" } });
expect("segment-node", "track", `Node Seg Checkout ${run}`, { user_id: user, properties: { items: 2, coupon: "X" } });
analytics.page({ anonymousId: `node-anon-${run}`, name: `Node Seg Page ${run}`, properties: { url: "https://node.example/blog/post-1?utm_source=node" } });
expect("segment-node", "page", `Node Seg Page ${run}`, { anonymous_id: `node-anon-${run}`, columns: { page_path: "/blog/post-1", utm_source: "node" } });
analytics.identify({ userId: user, traits: { email: `${run}@node.example` } });
expect("segment-node", "identify", null, { user_id: user });
analytics.group({ userId: user, groupId: `node-group-${run}` });
expect("segment-node", "group", null, { user_id: user, columns: { group_id: `node-group-${run}` } });
analytics.alias({ userId: user, previousId: `node-old-${run}` });
expect("segment-node", "alias", null, { user_id: user, columns: { previous_id: `node-old-${run}` } });
await analytics.closeAndFlush({ timeout: 20000 });

// PostHog: posthog-node (gzip by default).
const posthog = new PostHog(key, { host });
posthog.on("error", (err) => { console.error("posthog error", err); process.exitCode = 1; });
const puser = `node-ph-user-${run}`;
posthog.capture({ distinctId: puser, event: `node ph signup ${run}`, properties: { plan: "team", seats: 5 } });
expect("posthog-node", "track", `node ph signup ${run}`, { user_id: puser, properties: { plan: "team", seats: 5 } });
posthog.capture({ distinctId: puser, event: "$pageview", properties: { $current_url: `https://nodeph.example/app-${run}` } });
expect("posthog-node", "page", null, { user_id: puser, columns: { page_path: `/app-${run}` } });
posthog.identify({ distinctId: puser, properties: { email: `${run}@nodeph.example` } });
expect("posthog-node", "identify", null, { user_id: puser });
posthog.groupIdentify({ groupType: "company", groupKey: `node-co-${run}`, distinctId: puser });
expect("posthog-node", "group", null, { user_id: puser, columns: { group_id: `node-co-${run}` } });
await posthog.shutdown(20000);

console.log(JSON.stringify(expected));
