// The scorer options as form fields, generated from each scorer type's typed
// Options (engine/scorers/base.py option_fields): text boxes, numbers, check
// boxes, choices, and one line per keyword. They write the JSON into the row's
// config field, which stays what the server reads (and what shows without script).
(function () {
  "use strict";

  const data = document.getElementById("scorer-options");
  const section = document.querySelector("[data-formset=scorers]");
  if (!data || !section) return;
  const OPTIONS = JSON.parse(data.textContent);

  function parsed(text) {
    try {
      const value = JSON.parse(text || "{}");
      return value && typeof value === "object" && !Array.isArray(value) ? value : {};
    } catch (error) {
      return {};
    }
  }

  function input(option, id, value) {
    let el;
    if (option.kind === "bool") {
      el = document.createElement("input");
      el.type = "checkbox";
      el.checked = Boolean(value);
    } else if (option.kind === "choice") {
      el = document.createElement("select");
      const blank = option.required ? ["— choose —", ""] : ["(default)", ""];
      [blank].concat(option.choices.map((c) => [String(c), String(c)])).forEach(([label, v]) => {
        const opt = document.createElement("option");
        opt.value = v;
        opt.textContent = label;
        el.appendChild(opt);
      });
      el.value = value == null ? "" : String(value);
    } else if (option.kind === "lines" || option.kind === "json" || String(option.default || "").includes("\n")) {
      el = document.createElement("textarea");
      el.rows = option.kind === "lines" ? 2 : 4;
      el.className = "code";
      if (option.kind === "lines") el.value = (value || []).join("\n");
      else if (option.kind === "json") el.value = value == null ? "" : JSON.stringify(value, null, 2);
      else el.value = value == null ? "" : value;
    } else {
      el = document.createElement("input");
      el.type = option.kind === "int" || option.kind === "float" ? "number" : "text";
      if (option.kind === "float") el.step = "any";
      el.value = value == null ? "" : value;
    }
    el.id = id;
    el.dataset.option = option.name;
    return el;
  }

  // The value a field holds, or undefined when the option is left at its default.
  function read(option, el) {
    let value;
    if (option.kind === "bool") value = el.checked;
    else if (option.kind === "lines") value = el.value.split("\n").map((s) => s.trim()).filter(Boolean);
    else if (el.value.trim() === "") return undefined;
    else if (option.kind === "int") value = Number.isInteger(Number(el.value)) ? Number(el.value) : el.value;
    else if (option.kind === "float") value = Number.isFinite(Number(el.value)) ? Number(el.value) : el.value;
    else if (option.kind === "json") {
      try {
        value = JSON.parse(el.value);
      } catch (error) {
        value = el.value; // the server names the option and what it must be
      }
    } else value = el.value;
    return JSON.stringify(value) === JSON.stringify(option.default) ? undefined : value;
  }

  function build(row) {
    const type = row.querySelector("select[name$='-type']");
    const config = row.querySelector("textarea[name$='-config'], input[name$='-config']");
    if (!type || !config) return;
    const field = config.closest(".field");
    field.classList.add("hidden");
    let box = row.querySelector(".scorer-options");
    if (!box) {
      box = document.createElement("fieldset");
      box.className = "scorer-options";
      field.after(box);
      type.addEventListener("change", () => render(row, type, config, box, true));
    }
    render(row, type, config, box, false);
  }

  function render(row, type, config, box, changed) {
    const options = OPTIONS[type.value] || [];
    const current = parsed(config.value);
    box.replaceChildren();
    const legend = document.createElement("legend");
    legend.textContent = "Options of " + type.value;
    box.appendChild(legend);
    if (!options.length) box.append("This scorer has no options.");
    const fields = options.map((option) => {
      const wrap = document.createElement("div");
      wrap.className = "field" + (option.kind === "bool" ? " checkbox" : "");
      const id = config.id + "-" + option.name;
      const label = document.createElement("label");
      label.htmlFor = id;
      label.textContent = option.name.replace(/_/g, " ") + (option.required ? " (required)" : "");
      const el = input(option, id, option.name in current ? current[option.name] : option.default);
      const help = document.createElement("p");
      help.className = "help";
      help.textContent = option.kind === "lines" ? "One a line." : option.help[0].toUpperCase() + option.help.slice(1) + ".";
      if (option.kind === "bool") wrap.append(el, label);
      else wrap.append(label, el, help);
      box.appendChild(wrap);
      el.addEventListener(el.tagName === "SELECT" || el.type === "checkbox" ? "change" : "input", write);
      return [option, el];
    });
    function write() {
      const out = {};
      fields.forEach(([option, el]) => {
        const value = read(option, el);
        if (value !== undefined) out[option.name] = value;
      });
      config.value = JSON.stringify(out);
    }
    // A new type keeps no options of the old one: write what these fields say now.
    if (changed) write();
  }

  const list = section.querySelector("[data-forms]");
  list.querySelectorAll("[data-form]").forEach(build);
  new MutationObserver((changes) =>
    changes.forEach((change) => change.addedNodes.forEach((node) => node.nodeType === 1 && node.matches("[data-form]") && build(node))),
  ).observe(list, { childList: true });
})();
