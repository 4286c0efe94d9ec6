/*! Logektor tracker: page views (also on single-page-app navigation), custom events, sendBeacon
 * on page hide. No dependencies, no cookies (an anonymous id in localStorage, or none at all with
 * data-cookieless). Served by Logektor at /t.js.
 *
 * <script defer src="https://logektor.example/t.js" data-write-key="wk_..."></script>
 *
 * Attributes: data-write-key (required); data-host (default: where the script came from);
 * data-respect-dnt="true" (send nothing when the browser asks not to be tracked);
 * data-cookieless="true" (no stored id: the server derives a daily visitor id; the source must
 * enable --cookieless); data-manual="true" (no automatic page views).
 *
 * API: logektor("track", name, properties) · logektor("page", properties) ·
 *      logektor("identify", userId, traits) · logektor("flush")
 * Calls made before the script loads are queued by this stub:
 * window.logektor = window.logektor || function () { (window.logektor.q = window.logektor.q || []).push(arguments); };
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script) return;
  var attr = function (name) { return script.getAttribute("data-" + name); };
  var key = attr("write-key");
  var host = (attr("host") || new URL(script.src, location.href).origin).replace(/\/$/, "");
  var queued = (window.logektor && window.logektor.q) || [];
  var noop = function () {};

  var dnt = navigator.doNotTrack === "1" || window.doNotTrack === "1" || navigator.globalPrivacyControl === true;
  if (!key || (attr("respect-dnt") === "true" && dnt)) {
    window.logektor = noop;
    return;
  }

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
    return hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-" + hex.slice(12, 16) + "-" + hex.slice(16, 20) + "-" + hex.slice(20);
  }

  var anonymousId = null;
  if (attr("cookieless") !== "true") {
    try {
      anonymousId = localStorage.getItem("lgk_aid");
      if (!anonymousId) {
        anonymousId = uuid();
        localStorage.setItem("lgk_aid", anonymousId);
      }
    } catch (e) {
      anonymousId = uuid();
    }
  }
  var userId = null;
  if (attr("cookieless") !== "true") {
    try { userId = localStorage.getItem("lgk_uid"); } catch (e) { /* storage blocked */ }
  }

  var firstPage = true;
  var pending = [];
  var timer = null;

  function context() {
    return {
      page: { url: location.href, path: location.pathname, title: document.title, referrer: firstPage ? document.referrer : "" },
      userAgent: navigator.userAgent,
      locale: navigator.language,
      screen: { width: screen.width, height: screen.height },
      library: { name: "logektor-t.js", version: "1" }
    };
  }

  function message(type, fields) {
    var m = { type: type, messageId: uuid(), timestamp: new Date().toISOString(), context: context() };
    if (anonymousId) m.anonymousId = anonymousId;
    if (userId) m.userId = userId;
    for (var k in fields) if (Object.prototype.hasOwnProperty.call(fields, k)) m[k] = fields[k];
    return m;
  }

  function body(batch) {
    return JSON.stringify({ batch: batch, sentAt: new Date().toISOString(), writeKey: key });
  }

  // text/plain keeps the request "simple": no CORS preflight.
  function send(beacon) {
    if (timer) { clearTimeout(timer); timer = null; }
    if (!pending.length) return;
    var batch = pending;
    pending = [];
    var url = host + "/v1/batch";
    if (beacon && navigator.sendBeacon && navigator.sendBeacon(url, new Blob([body(batch)], { type: "text/plain" }))) return;
    fetch(url, { method: "POST", body: body(batch), headers: { "Content-Type": "text/plain" }, keepalive: true, credentials: "omit" })
      .catch(noop);
  }

  function enqueue(m, now) {
    pending.push(m);
    if (now || pending.length >= 20) send(false);
    else if (!timer) timer = setTimeout(function () { send(false); }, 1000);
  }

  var lastUrl = null;
  function page(properties) {
    if (location.href === lastUrl) return;
    lastUrl = location.href;
    var props = properties || {};
    var m = message("page", { properties: props });
    firstPage = false;
    enqueue(m, true);
  }

  var api = {
    track: function (name, properties) { if (name) enqueue(message("track", { event: String(name), properties: properties || {} })); },
    page: function (properties) { lastUrl = null; page(properties); },
    identify: function (id, traits) {
      userId = id ? String(id) : null;
      // Cookieless mode stores nothing in the browser, the user id included.
      if (attr("cookieless") !== "true") {
        try { if (userId) localStorage.setItem("lgk_uid", userId); else localStorage.removeItem("lgk_uid"); } catch (e) { /* storage blocked */ }
      }
      enqueue(message("identify", { traits: traits || {} }), true);
    },
    flush: function () { send(false); }
  };

  window.logektor = function (command) {
    var fn = api[command];
    if (fn) fn.apply(null, Array.prototype.slice.call(arguments, 1));
  };

  if (attr("manual") !== "true") {
    // Single-page apps: history.pushState and back/forward navigation are page views too.
    var push = history.pushState;
    history.pushState = function () {
      var result = push.apply(this, arguments);
      page();
      return result;
    };
    window.addEventListener("popstate", function () { page(); });
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { page(); });
    else page();
  }

  // What is still queued leaves with sendBeacon, which survives the page going away.
  document.addEventListener("visibilitychange", function () { if (document.visibilityState === "hidden") send(true); });
  window.addEventListener("pagehide", function () { send(true); });

  for (var i = 0; i < queued.length; i++) window.logektor.apply(null, queued[i]);
})();
