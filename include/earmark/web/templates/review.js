// The review pages, keyboard first. The item page: shortcuts, playback speed, the lease's
// countdown (extended while the page is in use) and the typed note kept in this tab until the
// decision is recorded.
(function () {
  "use strict";
  // The review page: c claims the next item (or opens the one already held).
  const claimForm = document.getElementById("claim-form");
  const openHeld = document.getElementById("open-held");
  if (claimForm || openHeld) {
    document.addEventListener("keydown", function (ev) {
      if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
      if (ev.target.closest("input, textarea, select")) return;
      if (ev.key === "c") {
        ev.preventDefault();
        if (openHeld) openHeld.click(); else claimForm.requestSubmit();
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
  let until = new Date(page.dataset.until);
  let lastExtend = 0;

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

  function extend() {
    const now = Date.now();
    if (now - lastExtend < 60000) return;
    lastExtend = now;
    fetch(page.dataset.extend, { method: "POST", credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) { if (body && body.until) until = new Date(body.until); })
      .catch(function () { /* the countdown shows what is left */ });
  }
  ["keydown", "click", "input"].forEach(function (ev) { document.addEventListener(ev, extend); });
  audio.addEventListener("timeupdate", extend);

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

  speed.addEventListener("change", function () { audio.playbackRate = Number(speed.value); });

  const decisions = { "1": "violation", "2": "no_violation", "3": "unclear" };
  document.addEventListener("keydown", function (ev) {
    const typing = ev.target === note;
    if (typing) {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        form.requestSubmit(document.getElementById("record-next"));
      } else if (ev.key === "Escape") {
        note.blur();
      }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const key = ev.key;
    // A focused control keeps its own keys: Enter and Space on a button or link, all on a menu.
    if (ev.target.tagName === "SELECT") return;
    if ((key === "Enter" || key === " ") && ev.target.closest("button, a, audio")) return;
    if (key === " " || key === "k") {
      ev.preventDefault();
      if (audio.paused) audio.play(); else audio.pause();
    } else if (key === "j" || key === "ArrowLeft") {
      audio.currentTime = Math.max(0, audio.currentTime - 5);
    } else if (key === "l" || key === "ArrowRight") {
      audio.currentTime = Math.min(audio.duration || 0, audio.currentTime + 5);
    } else if (decisions[key]) {
      form.querySelector('input[value="' + decisions[key] + '"]').checked = true;
      saveDraft();
    } else if (key === "n") {
      ev.preventDefault();
      note.focus();
    } else if (key === "Enter") {
      ev.preventDefault();
      form.requestSubmit(document.getElementById("record-next"));
    } else if (key === "s") {
      document.getElementById("skip-form").requestSubmit();
    } else if (key === "r") {
      document.getElementById("release-form").requestSubmit();
    }
  });
  form.addEventListener("submit", function () {
    try { sessionStorage.removeItem(draftKey); } catch (e) { /* nothing kept */ }
  });
})();
