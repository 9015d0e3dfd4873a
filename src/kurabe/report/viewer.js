// Side-by-side viewer: every model-written string goes through textContent, never innerHTML.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("kurabe-data").textContent);
  var root = document.getElementById("viewer");
  if (!root || !data.responses.length) { return; }
  var promptSel = document.getElementById("viewer-prompt");
  var catSel = document.getElementById("viewer-category");
  var modelBox = document.getElementById("viewer-models");
  var reasoningBox = document.getElementById("viewer-reasoning");
  var out = document.getElementById("viewer-cards");
  var status = document.getElementById("viewer-status");

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function opt(sel, value, label) {
    var o = el("option", null, label);
    o.value = value;
    sel.appendChild(o);
  }
  // A long text (a runaway answer can be megabytes) is shown in part at first, in a box of
  // bounded height, with a button that shows the whole of it.
  var SHOWN_CHARS = 20000;
  function longText(parent, cls, text) {
    text = String(text);
    var cut = SHOWN_CHARS;
    if (text.length > cut) {
      var code = text.charCodeAt(cut - 1);
      if (code >= 0xd800 && code <= 0xdbff) { cut -= 1; }  // keep a surrogate pair whole
    }
    var pre = el("pre", cls, text.length > cut ? text.slice(0, cut) + " …" : text);
    parent.appendChild(pre);
    if (text.length > cut) {
      var more = el("button", "more", "show all " + text.length + " characters (" +
        (text.length - cut) + " more)");
      more.type = "button";
      more.addEventListener("click", function () {
        pre.textContent = text;
        parent.removeChild(more);
      });
      parent.appendChild(more);
    }
    return pre;
  }
  function fmt(v, unit) {
    if (v === null || v === undefined) { return "–"; }
    return (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3)) + (unit ? " " + unit : "");
  }

  var categories = [];
  data.prompts.forEach(function (p) { if (categories.indexOf(p.category) < 0) { categories.push(p.category); } });
  opt(catSel, "", "all categories");
  categories.forEach(function (c) { opt(catSel, c, c); });
  data.models.forEach(function (m) {
    var label = el("label", "model-toggle");
    var box = el("input");
    box.type = "checkbox";
    box.checked = true;
    box.value = m;
    label.appendChild(box);
    label.appendChild(document.createTextNode(" " + m));
    modelBox.appendChild(label);
  });

  function fillPrompts() {
    var keep = promptSel.value;
    while (promptSel.firstChild) { promptSel.removeChild(promptSel.firstChild); }
    data.prompts.forEach(function (p) {
      if (!catSel.value || p.category === catSel.value) { opt(promptSel, p.id, p.id + " — " + p.text.slice(0, 60)); }
    });
    if (keep) { promptSel.value = keep; }
    if (promptSel.selectedIndex < 0) { promptSel.selectedIndex = 0; }
  }

  function render() {
    var shown = [];
    modelBox.querySelectorAll("input").forEach(function (b) { if (b.checked) { shown.push(b.value); } });
    while (out.firstChild) { out.removeChild(out.firstChild); }
    var pid = promptSel.value;
    var prompt = data.prompts.filter(function (p) { return p.id === pid; })[0];
    var rows = data.responses.filter(function (r) {
      return r.prompt_id === pid && shown.indexOf(r.model) >= 0 && r.repeat === 0 &&
        (r.phase === "measure" || r.phase === "quality");
    });
    if (prompt) { out.appendChild(el("p", "viewer-prompt-text", prompt.text)); }
    var grid = el("div", "cards");
    rows.forEach(function (r) {
      var card = el("article", "card");
      card.setAttribute("data-model", r.model);
      card.appendChild(el("h4", null, r.model));
      var meta = el("p", "meta", "outcome " + r.outcome + " · finish " + r.finish_reason +
        " · decode " + fmt(r.decode_tokens_per_s, "t/s") + " · " + fmt(r.chars_per_s, "chars/s") +
        " · TTFT " + fmt(r.ttft_s, "s") + " · " + (r.output_tokens || 0) + " tokens");
      card.appendChild(meta);
      if (r.phase === "quality" && r.grade_status) {
        card.appendChild(el("p", "grade", r.grade_status === "scored" ?
          "judge grade " + r.grade + "/10: " + (r.judge_explanation || "") :
          "judge: " + r.grade_status + (r.judge_explanation ? " (" + r.judge_explanation + ")" : "")));
      }
      if (reasoningBox.checked && r.reasoning) {
        longText(card, "reasoning", r.reasoning);
      }
      longText(card, "answer", r.answer || "(empty answer)");
      grid.appendChild(card);
    });
    out.appendChild(grid);
    status.textContent = rows.length + " answer(s) shown for prompt " + pid;
  }

  catSel.addEventListener("change", function () { fillPrompts(); render(); });
  promptSel.addEventListener("change", render);
  modelBox.addEventListener("change", render);
  reasoningBox.addEventListener("change", render);
  document.addEventListener("keydown", function (ev) {
    if (ev.target && (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT")) { return; }
    if (ev.key === "j" || ev.key === "k") {
      var i = promptSel.selectedIndex + (ev.key === "j" ? 1 : -1);
      if (i >= 0 && i < promptSel.options.length) { promptSel.selectedIndex = i; render(); }
    } else if (ev.key === "r") {
      reasoningBox.checked = !reasoningBox.checked; render();
    }
  });
  fillPrompts();
  render();
})();
