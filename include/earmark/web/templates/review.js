// The review pages, keyboard first. The item page: shortcuts, playback speed, the lease's
// countdown (extended while the page is in use) and the typed note kept in this tab until the
// decision is recorded. Opened from Airflow's "RA review" menu the pages sit in a frame of the
// Airflow UI (same origin): keys pressed while the focus is still outside the frame work too.
(function () {
  "use strict";

  // A key handler for this page and, inside Airflow's frame, for the page around it (its own
  // fields keep their keys). Removed when this page goes, so an old page never answers.
  function onKeys(handler) {
    document.addEventListener("keydown", handler);
    if (window.top === window) return;
    let outer = null;
    try { outer = window.parent.document; } catch (e) { return; /* another origin: ours only */ }
    const forward = function (ev) {
      if (ev.defaultPrevented || ev.target.closest("input, textarea, select, [contenteditable]")) return;
      handler(ev);
    };
    outer.addEventListener("keydown", forward);
    window.addEventListener("pagehide", function () { outer.removeEventListener("keydown", forward); });
    try { window.focus(); } catch (e) { /* the forwarded keys still work */ }
  }
  function plain(ev) { return !(ev.ctrlKey || ev.metaKey || ev.altKey); }
  function inField(ev) { return ev.target.closest && ev.target.closest("input, textarea, select"); }
  const unskipForm = document.getElementById("unskip-form");

  // The review page: c claims the next item (or opens the one already held); u undoes a skip.
  const claimForm = document.getElementById("claim-form");
  const openHeld = document.getElementById("open-held");
  if (claimForm || openHeld) {
    onKeys(function (ev) {
      if (!plain(ev) || inField(ev)) return;
      if (ev.key === "c") {
        ev.preventDefault();
        if (openHeld) openHeld.click(); else claimForm.requestSubmit();
      } else if (ev.key === "u" && unskipForm) {
        ev.preventDefault();
        unskipForm.requestSubmit();
      }
    });
  }
  const page = document.getElementById("item-page");
  if (!page) return;
  const audio = document.getElementById("recording");
  const form = document.getElementById("decision-form");
  const note = document.getElementById("note");
  const countdown = document.getElementById("countdown");
  const speed = document.getElementById("speed");
  const itemId = page.dataset.item;
  const draftKey = "earmark-draft-" + itemId;
  const leaseMs = Number(page.dataset.leaseMinutes || 30) * 60000;
  let until = new Date(page.dataset.until);
  let leaving = false;  // a form is on its way: no more renewals
  let extending = false;

  // The draft (decision and note) survives a reload or a lapsed lease in this tab.
  try {
    const draft = JSON.parse(sessionStorage.getItem(draftKey) || "null");
    if (draft) {
      if (draft.note && !note.value) note.value = draft.note;
      const choice = draft.decision && form.querySelector('input[value="' + draft.decision + '"]');
      if (choice) choice.checked = true;
    }
  } catch (e) { /* storage unavailable: nothing to restore */ }
  function saveDraft() {
    const chosen = form.querySelector('input[name="decision"]:checked');
    try {
      sessionStorage.setItem(draftKey, JSON.stringify({
        note: note.value, decision: chosen ? chosen.value : null,
      }));
    } catch (e) { /* storage unavailable */ }
  }
  form.addEventListener("input", saveDraft);
  form.addEventListener("change", saveDraft);

  // Renew the claim while the page is in use, once less than half the lease is left: a page
  // just opened (its claim fresh) writes nothing, and a key that leaves the page renews nothing.
  function extend() {
    if (leaving || extending || until - Date.now() > leaseMs / 2 || until <= Date.now()) return;
    extending = true;
    fetch(page.dataset.extend, { method: "POST", credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) { if (body && body.until) until = new Date(body.until); })
      .catch(function () { /* the countdown shows what is left */ })
      .finally(function () { extending = false; });
  }
  ["click", "input"].forEach(function (ev) { document.addEventListener(ev, extend); });
  audio.addEventListener("timeupdate", extend);
  document.querySelectorAll("form").forEach(function (f) {
    f.addEventListener("submit", function () { leaving = true; });
  });

  function tick() {
    const left = Math.max(0, Math.round((until - Date.now()) / 1000));
    const m = Math.floor(left / 60), s = left % 60;
    countdown.textContent = left > 0
      ? m + ":" + String(s).padStart(2, "0")
      : "lapsed (your note is kept; recording the decision claims the item again if it is free)";
    countdown.classList.toggle("warn", left > 0 && left < 120);
  }
  tick();
  setInterval(tick, 1000);

  const speeds = Array.from(speed.options).map(function (o) { return o.value; });
  function setSpeed(value) {
    speed.value = value;
    audio.playbackRate = Number(value);
  }
  speed.addEventListener("change", function () { setSpeed(speed.value); });

  function submit(formElement, button) {
    leaving = true;
    formElement.requestSubmit(button);
  }
  const decisions = { "1": "violation", "2": "no_violation", "3": "unclear" };
  const leavingKeys = ["Enter", "s", "r", "u"];
  onKeys(function (ev) {
    const typing = ev.target === note;
    if (typing) {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        submit(form, document.getElementById("record-next"));
      } else if (ev.key === "Escape") {
        note.blur();
      }
      return;
    }
    if (!plain(ev)) return;
    const key = ev.key;
    // A focused control keeps its own keys: Enter and Space on a button or link, all on a menu.
    if (ev.target.tagName === "SELECT") return;
    if ((key === "Enter" || key === " ") && ev.target.closest("button, a, audio")) return;
    if (leavingKeys.indexOf(key) < 0) extend();
    if (key === " " || key === "k") {
      ev.preventDefault();
      if (audio.paused) audio.play(); else audio.pause();
    } else if (key === "j" || key === "ArrowLeft") {
      audio.currentTime = Math.max(0, audio.currentTime - 5);
    } else if (key === "l" || key === "ArrowRight") {
      audio.currentTime = Math.min(audio.duration || 0, audio.currentTime + 5);
    } else if (key === "[" || key === "]") {
      const at = speeds.indexOf(speed.value) + (key === "]" ? 1 : -1);
      setSpeed(speeds[Math.max(0, Math.min(speeds.length - 1, at))]);
    } else if (decisions[key]) {
      form.querySelector('input[value="' + decisions[key] + '"]').checked = true;
      saveDraft();
    } else if (key === "n") {
      ev.preventDefault();
      note.focus();
    } else if (key === "Enter") {
      ev.preventDefault();
      submit(form, document.getElementById("record-next"));
    } else if (key === "s") {
      submit(document.getElementById("skip-form"));
    } else if (key === "r") {
      submit(document.getElementById("release-form"));
    } else if (key === "u" && unskipForm) {
      submit(unskipForm);
    }
  });
  form.addEventListener("submit", function () {
    try { sessionStorage.removeItem(draftKey); } catch (e) { /* nothing kept */ }
  });
})();
