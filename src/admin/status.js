// The status page's behaviour: the admin token (sessionStorage, sent as a bearer header), the
// three-dot menus, and the actions, which call the JSON API then re-render the page from `/`.
(() => {
  "use strict";
  const KEY = "wa-gateway-admin-token";
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    sessionStorage.setItem(KEY, params.get("token"));
    params.delete("token");
    // Keep the token out of the address bar and the history.
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
  }
  const headers = () => {
    const t = sessionStorage.getItem(KEY);
    return t ? { Authorization: "Bearer " + t } : {};
  };
  const byId = (id) => document.getElementById(id);

  // Fetches `/` again with the token and swaps the page content (or just one card).
  async function refresh(onlyCard) {
    const res = await fetch("/", { headers: headers(), cache: "no-store" });
    const doc = new DOMParser().parseFromString(await res.text(), "text/html");
    if (onlyCard && doc.getElementById(onlyCard) && byId(onlyCard)) {
      byId(onlyCard).replaceWith(doc.getElementById(onlyCard));
      const top = doc.querySelector("header.top");
      if (top) document.querySelector("header.top").replaceWith(top);
    } else {
      byId("app").replaceWith(doc.getElementById("app"));
    }
    document.body.dataset.locked = doc.body.dataset.locked;
  }

  function closeMenus(except) {
    document.querySelectorAll(".menu-items").forEach((m) => {
      if (m !== except) {
        m.hidden = true;
        m.parentElement.querySelector(".dots").setAttribute("aria-expanded", "false");
      }
    });
  }

  // One line per check: outcome, title, what was found and, when it failed, the fix.
  function showChecks(cardId, checks) {
    const list = byId(cardId) && byId(cardId).querySelector(".checks");
    if (!list) return;
    list.replaceChildren(...checks.map((c) => {
      const li = document.createElement("li");
      li.className = "check check-" + c.outcome;
      li.dataset.check = c.id;
      li.dataset.outcome = c.outcome;
      const head = document.createElement("div");
      const tag = document.createElement("span");
      tag.className = "outcome";
      tag.textContent = c.outcome.toUpperCase();
      const title = document.createElement("strong");
      title.textContent = " " + c.title;
      head.append(tag, title);
      const detail = document.createElement("div");
      detail.className = "detail";
      detail.textContent = c.detail;
      li.append(head, detail);
      if (c.fix) {
        const fix = document.createElement("div");
        fix.className = "fix";
        fix.textContent = "Fix: " + c.fix;
        li.append(fix);
      }
      return li;
    }));
    list.hidden = false;
  }

  async function act(number, action) {
    const cardId = "card-" + number;
    let text, failed;
    try {
      const res = await fetch("/api/numbers/" + encodeURIComponent(number) + "/" + action, {
        method: "POST", headers: headers(),
      });
      const body = await res.json().catch(() => ({}));
      failed = !res.ok;
      if (failed) text = body.error || "HTTP " + res.status;
      else if (action === "test") {
        showChecks(cardId, body.checks || []);
        failed = !body.ok;
        const bad = (body.checks || []).filter((c) => c.outcome === "fail");
        text = body.ok ? "Connection OK: every check passed."
          : "Test Connection failed: " + bad.map((c) => c.title).join(", ") + ".";
      } else text = { disconnect: "Disconnected.", connect: "Connected." }[action];
      if (res.ok && action !== "test") await refresh(cardId);
    } catch (e) {
      failed = true;
      text = "The gateway did not answer: " + e;
    }
    const msg = byId(cardId) && byId(cardId).querySelector(".msg");
    if (msg) {
      msg.textContent = text;
      msg.classList.toggle("error", failed);
    }
    document.body.dataset.lastAction = action + ":" + (failed ? "error" : "ok");
    document.body.dataset.actions = String(Number(document.body.dataset.actions || 0) + 1);
  }

  document.addEventListener("click", (ev) => {
    const dots = ev.target.closest("[data-menu]");
    if (dots) {
      const items = dots.parentElement.querySelector(".menu-items");
      closeMenus(items);
      items.hidden = !items.hidden;
      dots.setAttribute("aria-expanded", String(!items.hidden));
      if (!items.hidden) items.querySelector("button").focus();
      return;
    }
    const item = ev.target.closest("[data-action]");
    closeMenus();
    if (item) act(item.dataset.number, item.dataset.action);
  });
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closeMenus(); });
  document.addEventListener("submit", async (ev) => {
    if (ev.target.id !== "login") return;
    ev.preventDefault();
    sessionStorage.setItem(KEY, ev.target.elements.token.value);
    await refresh();
  });

  // `?action=disconnect&number=…` clicks that menu item once the page is ready (used by the
  // browser test; it goes through the same click path as a person).
  async function start() {
    if (document.body.dataset.locked === "true" && sessionStorage.getItem(KEY)) await refresh();
    const action = params.get("action"), number = params.get("number");
    if (action && number && document.body.dataset.locked !== "true") {
      const dots = document.querySelector('[data-menu="' + CSS.escape(number) + '"]');
      const item = document.querySelector(
        '[data-action="' + CSS.escape(action) + '"][data-number="' + CSS.escape(number) + '"]');
      if (dots && item) { dots.click(); item.click(); }
    }
    document.body.dataset.ready = "true";
  }
  start();
})();
