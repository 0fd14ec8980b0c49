// The "Connect with Facebook" launcher: Meta's Embedded Signup (v4) through the JS SDK's FB.login with
// the app's config_id, asking for a code (not a token). The popup posts a WA_EMBEDDED_SIGNUP
// message with the WABA and phone number ids; once both the code and the ids are in, they go to
// POST /api/signup, which stores the token encrypted and answers the YAML to add to the config.
(() => {
  "use strict";
  const root = document.getElementById("signup");
  if (!root) return;
  const msg = document.getElementById("signup-msg");
  const out = document.getElementById("signup-yaml");
  const say = (text, failed) => { msg.textContent = text; msg.classList.toggle("error", !!failed); };
  let code = null, ids = null, sent = false;

  window.fbAsyncInit = () => {
    FB.init({ appId: root.dataset.appId, autoLogAppEvents: true, xfbml: false,
              version: root.dataset.graphVersion });
  };

  window.addEventListener("message", (event) => {
    if (!/^https:\/\/([a-z]+\.)?facebook\.com$/.test(event.origin)) return;
    let data;
    try { data = typeof event.data === "string" ? JSON.parse(event.data) : event.data; } catch (_) { return; }
    if (!data || data.type !== "WA_EMBEDDED_SIGNUP") return;
    if (data.event === "CANCEL") {
      say("Signup was cancelled" + (data.data && data.data.current_step ? " at " + data.data.current_step : "") + ".", true);
    } else if (data.event === "ERROR") {
      say("Signup failed: " + ((data.data && data.data.error_message) || "unknown error") + ".", true);
    } else if (data.data && data.data.waba_id) {
      ids = { waba_id: data.data.waba_id, phone_number_id: data.data.phone_number_id };
      submit();
    }
  });

  async function submit() {
    if (!code || !ids || sent) return;
    sent = true;
    say("Storing the token…");
    // The sign-in cookie goes along (same origin); the page never holds the token.
    const headers = { "Content-Type": "application/json" };
    const body = { code, waba_id: ids.waba_id };
    if (ids.phone_number_id) body.phone_number_id = ids.phone_number_id;
    try {
      const res = await fetch("/api/signup", { method: "POST", headers, credentials: "same-origin", body: JSON.stringify(body) });
      const answer = await res.json().catch(() => ({}));
      if (!res.ok) { say(answer.error || "HTTP " + res.status, true); return; }
      say("Token stored as " + answer.name + ". Add these entries to the config, set the PIN, then run wa-gateway apply:");
      out.textContent = answer.yaml;
      out.hidden = false;
    } catch (e) {
      say("The gateway did not answer: " + e, true);
    }
  }

  document.getElementById("connect-facebook").addEventListener("click", () => {
    if (typeof FB === "undefined") {
      say("Facebook's SDK did not load (offline or blocked). Run `wa-gateway signup --code … --waba-id …` instead.", true);
      return;
    }
    code = null; ids = null; sent = false;
    FB.login((response) => {
      if (response.authResponse && response.authResponse.code) {
        code = response.authResponse.code;
        submit();
      } else {
        say("Facebook login did not complete.", true);
      }
    }, {
      config_id: root.dataset.configId,
      response_type: "code",
      override_default_response_type: true,
      // Embedded Signup v4: Meta's docs leave `extras` empty on purpose for v4 (the flow comes
      // from the login configuration). `sessionInfoVersion` alone meant v2, retired 2026-10-15,
      // and v3 (`version: "v3"`) ended in October 2026 as well.
      extras: {},
    });
  });
})();
