// The page's script (see arena/ui/look.py, which fills in __PANELS__ and __PLOT_DESCRIPTIONS__).
// Gradio runs it once the page is drawn. It copies only what the page already shows: no model's identity.
() => {
  const panels = __PANELS__;
  const plotDescriptions = __PLOT_DESCRIPTIONS__;
  const touch = matchMedia("(pointer: coarse)").matches;
  const announcer = document.createElement("div");
  announcer.id = "arena-announcer";
  announcer.className = "arena-visually-hidden";
  announcer.setAttribute("role", "status");
  announcer.setAttribute("aria-live", "polite");
  document.body.appendChild(announcer);
  let announced = {text: "", at: 0};
  const announce = (text) => {
    // Emptied first, so that the same words said again (a second refusal) are read again; emptied after,
    // so that the last receipt is not left lying in the page.
    announcer.textContent = "";
    announced = {text, at: Date.now()};
    requestAnimationFrame(() => { announcer.textContent = text; });
    setTimeout(() => { if (announced.text === text) announcer.textContent = ""; }, 5000);
  };
  const setIfChanged = (element, name, value) => {
    if (element.getAttribute(name) !== value) element.setAttribute(name, value);
  };
  const statusOf = (panel) => {  // its text, and whether its tab is on screen (asked only when needed: layout)
    const status = document.getElementById(panel.status);
    const prose = status && status.querySelector(".prose");
    return {text: prose ? prose.textContent.trim() : "",
            onScreen: () => status !== null && status.offsetParent !== null};
  };
  const shown = {}, queued = {}, turns = {}, prompted = {}, rising = {}, notes = {};
  const noteOf = (panel) => {  // a line under the panel's status, which page loads and answers leave alone
    const status = document.getElementById(panel.status);
    if (!notes[panel.status] || !notes[panel.status].isConnected) {
      const note = document.createElement("p");
      note.className = "arena-status-note";
      notes[panel.status] = note;
      status?.after(note);
    }
    return notes[panel.status];
  };
  const say = (panel, kind, text) => {  // kind: what the note is about; the announcer reads it, so it is hidden
    const note = noteOf(panel);
    note.setAttribute("aria-hidden", "true");
    note.dataset.kind = kind;
    note.textContent = text;
  };
  const mend = () => {
    for (const panel of panels) {
      // A status line that changes in the tab on screen is read out (answering, answers in, the receipt).
      const {text, onScreen} = statusOf(panel);
      if (panel.status in shown && shown[panel.status] !== text && text && onScreen()) announce(text);
      shown[panel.status] = text;
      // Waiting for a free answering slot, Gradio shows the place in line over the event's outputs ("queue:
      // 2/5"). Not always over the status: with the page-load event still queued there when the prompt was
      // sent, the status's tracker was seen to stay empty while the ask waited, so the prompt's is read too.
      // Every event passes through the queue for a moment: only a wait of over a second is said.
      const trackers = document.querySelectorAll(
        `#${panel.status} [data-testid="status-tracker"], #${panel.prompt} [data-testid="status-tracker"]`);
      const place = [...trackers].map((tracker) => tracker.textContent.match(/queue:\s*(\d+)\s*\/\s*(\d+)/))
        .find(Boolean);
      // It is said on the page too, under the status, which Gradio greys out while the event waits.
      const line = place ? `Waiting for a free answering slot: you are ${place[1]} of ${place[2]} in line.` : "";
      if (line && line !== queued[panel.status]) {
        setTimeout(() => {
          if (queued[panel.status] !== line) return;
          say(panel, "queue", line);
          if (statusOf(panel).onScreen()) announce(line);
        }, 1200);
      }
      const note = noteOf(panel);
      if (!line && note.dataset.kind === "queue" && note.textContent) say(panel, "queue", "");
      queued[panel.status] = line;
      // On a phone the answers are as long as their text: a follow-up starts where its prompt is, not
      // wherever the earlier turns left the page.
      const prompts = document.querySelectorAll(`#${panel.chat} .user-row`);
      if (touch && prompts.length > (turns[panel.chat] || 0) && prompts.length > 1) {
        prompts[prompts.length - 1].scrollIntoView({block: "start"});
      }
      turns[panel.chat] = prompts.length;
      // Elsewhere each chat is a window of its own, which does not follow the answer down as it streams (a
      // long one would be left showing its last lines): a new prompt is brought to its top as soon as the
      // answer below it is long enough, unless the reader scrolls first, and the answer is read from its start.
      for (const id of touch ? [] : panel.chats) {
        const log = document.querySelector(`#${id} [role="log"]`);
        if (!log) continue;
        if (!log.dataset.arenaReader) {
          log.dataset.arenaReader = "1";
          log.tabIndex = 0;  // a window of its own: Tab reaches it, the arrow and page keys scroll a long answer
          for (const kind of ["wheel", "pointerdown", "keydown"]) log.addEventListener(kind, () => { delete rising[id]; });
        }
        const asked = log.querySelectorAll(".user-row");
        if (asked.length > (prompted[id] || 0)) rising[id] = asked.length;
        prompted[id] = asked.length;
        const row = rising[id] && asked[rising[id] - 1];
        if (!row) continue;
        // The prompt's top at the window's, or, for a long prompt, its last lines in the top third, the answer below.
        const place = () => {
          const box = row.getBoundingClientRect(), top = log.getBoundingClientRect().top;
          return Math.max(box.top - top, box.bottom - top - log.clientHeight / 3);
        };
        if (place() > 1) log.scrollTop += place();
        if (place() <= 1) delete rising[id];
      }
    }
    // Answers stream a token at a time: read live, each would be re-read from its start on every token.
    // They are read when the status says they are in; each panel is named by its label ("Model A").
    for (const chat of document.querySelectorAll(".arena-chat")) {
      const log = chat.querySelector('[role="log"]');
      if (!log) continue;
      setIfChanged(log, "aria-live", "off");
      const label = chat.querySelector('[data-testid="block-label"]');
      if (label && label.textContent.trim()) setIfChanged(log, "aria-label", label.textContent.trim());
    }
    // Gradio 6.31's own announcer reads untranslated keys ("common.loading", "common.complete") at every
    // event; the status line says what happened, in words.
    for (const region of document.querySelectorAll('.sr-only[role="status"]')) setIfChanged(region, "aria-live", "off");
    for (const [id, description] of Object.entries(plotDescriptions)) {
      for (const image of document.querySelectorAll(`#${id} img`)) setIfChanged(image, "alt", description);
    }
  };
  let pending = false;  // streamed tokens change the page many times a frame: mend once per frame
  new MutationObserver(() => {
    if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; mend(); }); }
  }).observe(document.body, {childList: true, subtree: true, characterData: true, attributes: true,
                             attributeFilter: ["alt"]});
  mend();
  // After each of a panel's events: a status the event left unchanged (the same refusal again) is read
  // out too, and the prompt gets the keyboard back, except on touch screens, where it would pop up the
  // keyboard over the answers.
  let lastEventDone = 0;
  window.arenaEventDone = (key, refocus) => {
    const panel = panels.find((candidate) => candidate.key === key);
    setTimeout(() => {
      const {text, onScreen} = statusOf(panel);
      if (text && onScreen() && announced.at <= lastEventDone) announce(text);  // nothing read out since the last event
      lastEventDone = Date.now();
      if (refocus && !touch) document.querySelector(`#${panel.prompt} textarea`)?.focus();
    }, 100);
  };
  // Reloading the page mid-answer ends the battle (the page holding it is gone) and took the prompt with it:
  // the text last sent, if it was still being answered (or waiting for a slot), comes back in the box. It is
  // kept in this tab's sessionStorage for the reload only; the volunteer's own words, nothing of the models.
  const sent = {};
  const leftBehind = (panel) => `arena-unanswered-${panel.key}`;
  const sending = (panel) => {
    const box = document.querySelector(`#${panel.prompt} textarea`);
    if (box && box.value.trim()) sent[panel.key] = box.value;
    if (noteOf(panel).dataset.kind === "reloaded") say(panel, "reloaded", "");
  };
  document.addEventListener("keydown", (event) => {
    const panel = event.key === "Enter" && !event.shiftKey && event.target.closest &&
      panels.find((candidate) => event.target.closest(`#${candidate.prompt}`));
    if (panel) sending(panel);
  }, true);
  document.addEventListener("click", (event) => {
    const panel = event.target.closest && panels.find((candidate) => event.target.closest(`#${candidate.send}`));
    if (panel) sending(panel);
  }, true);
  window.addEventListener("pagehide", () => {
    for (const panel of panels) {
      const answering = statusOf(panel).text.endsWith(panel.answering) || queued[panel.status];
      if (answering && sent[panel.key]) sessionStorage.setItem(leftBehind(panel), sent[panel.key]);
    }
  });
  for (const panel of panels) {
    const text = sessionStorage.getItem(leftBehind(panel));
    if (text === null) continue;
    sessionStorage.removeItem(leftBehind(panel));
    const box = document.querySelector(`#${panel.prompt} textarea`);
    if (!box || box.value) continue;
    box.value = text;
    box.dispatchEvent(new Event("input", {bubbles: true}));  // Gradio's own value follows the box
    say(panel, "reloaded", "The page was reloaded while the models were answering, so that battle ended " +
        "without a vote. Your prompt is back in the box.");
    if (statusOf(panel).onScreen()) announce(noteOf(panel).textContent);
  }
  // Choosing a model with Enter closes the list and drops the keyboard focus on the page itself (Gradio
  // blurs the box); it goes on to the prompt, the next step, instead of back to the top of the page.
  document.addEventListener("keydown", (event) => {
    const picker = event.key === "Enter" && event.target.closest && event.target.closest(".arena-picker");
    const panel = picker && panels.find((candidate) => candidate.pickers.includes(picker.id));
    if (!panel) return;
    setTimeout(() => {
      if (document.activeElement === document.body) document.querySelector(`#${panel.prompt} textarea`)?.focus();
    }, 100);
  }, true);
}
