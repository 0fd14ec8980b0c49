// The status page's behaviour: the sign-in form (the token goes to POST /api/session once, which
// answers with an HttpOnly cookie; no script ever holds it), the three-dot menus, the actions
// (number actions, and pausing or resuming a conversation), which call the JSON API (JSON bodies,
// same origin) then re-render the card from `/`.
(() => {
  "use strict";
  const JSON_HEADERS = { "Content-Type": "application/json" };
  const byId = (id) => document.getElementById(id);

  // Fetches `/` again (the cookie goes along) and swaps the page content (or just one card).
  async function refresh(onlyCard) {
    const res = await fetch("/", { credentials: "same-origin", cache: "no-store" });
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
        method: "POST", headers: JSON_HEADERS, body: "{}", credentials: "same-origin",
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
    report(cardId, action, text, failed);
  }

  // Shows what an action did in its card, and records it for whoever watches the page.
  function report(cardId, action, text, failed) {
    const msg = byId(cardId) && byId(cardId).querySelector(".msg");
    if (msg) {
      msg.textContent = text;
      msg.classList.toggle("error", failed);
    }
    document.body.dataset.lastAction = action + ":" + (failed ? "error" : "ok");
    document.body.dataset.actions = String(Number(document.body.dataset.actions || 0) + 1);
  }

  // Pauses (the card's form) or resumes (a paused conversation's button) one conversation.
  async function converse(number, customer, action, body) {
    const cardId = "card-" + number;
    let text, failed;
    try {
      const url = "/api/conversations/" + encodeURIComponent(number) + "/" +
        encodeURIComponent(customer) + "/" + action;
      const res = await fetch(url, {
        method: "POST", headers: JSON_HEADERS, body: JSON.stringify(body), credentials: "same-origin",
      });
      const got = await res.json().catch(() => ({}));
      failed = !res.ok;
      if (failed) text = got.error || "HTTP " + res.status;
      else if (action === "pause") text = "Paused " + customer + " until " + got.paused_until + ".";
      else text = "Resumed " + customer + ": the agent answers again.";
      if (res.ok) await refresh(cardId);
    } catch (e) {
      failed = true;
      text = "The gateway did not answer: " + e;
    }
    report(cardId, action, text, failed);
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
    if (item && item.dataset.customer) converse(item.dataset.number, item.dataset.customer, item.dataset.action, {});
    else if (item) act(item.dataset.number, item.dataset.action);
  });
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closeMenus(); });
  document.addEventListener("submit", (ev) => {
    const form = ev.target.closest(".pause-form");
    if (!form) return;
    ev.preventDefault();
    const f = form.elements;
    const body = {};
    if (f.for.value.trim()) body.for = f.for.value.trim();
    if (f.reason.value.trim()) body.reason = f.reason.value.trim();
    converse(form.dataset.number, f.customer.value.trim(), "pause", body);
  });
  document.addEventListener("submit", async (ev) => {
    if (ev.target.id !== "login") return;
    ev.preventDefault();
    const field = ev.target.elements.token;
    const res = await fetch("/api/session", {
      method: "POST", headers: JSON_HEADERS, credentials: "same-origin",
      body: JSON.stringify({ token: field.value }),
    }).catch(() => null);
    field.value = "";
    if (res && res.ok) {
      await refresh();
      document.body.dataset.ready = "true";
      return;
    }
    const msg = byId("login-msg");
    if (msg) msg.textContent = res ? "That token is not the admin token." : "The gateway did not answer.";
    document.body.dataset.signIn = "refused";
  });

  document.body.dataset.ready = "true";
})();
