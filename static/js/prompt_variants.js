// Prompt variants one text area each, with add and remove, for a parameter whose
// key is a stage template (answer.user, answer.system). The variants are joined
// with "---" lines into the row's values field, which the server reads.
(function () {
  "use strict";

  const section = document.querySelector("[data-formset=params]");
  if (!section) return;
  const SEPARATOR = /^\s*---\s*$/m;
  const isTemplate = (key) => /\.(user|system)$/.test(key.trim());

  function setup(row) {
    const key = row.querySelector("input[name$='-key']");
    const values = row.querySelector("textarea[name$='-values']");
    if (!key || !values || row.querySelector(".variants")) return;
    const box = document.createElement("div");
    box.className = "variants";
    values.closest(".field").after(box);
    const sync = () => {
      const on = isTemplate(key.value);
      values.closest(".field").classList.toggle("hidden", on);
      box.classList.toggle("hidden", !on);
      if (on && !box.childElementCount) render(values, box);
    };
    key.addEventListener("input", sync);
    sync();
  }

  function render(values, box) {
    const parts = values.value.split(SEPARATOR).map((p) => p.trim());
    const list = document.createElement("ol");
    list.className = "variant-list";
    const add = document.createElement("button");
    add.type = "button";
    add.className = "small";
    add.textContent = "Add a variant";
    const write = () => {
      values.value = Array.from(list.querySelectorAll("textarea")).map((t) => t.value.trim()).join("\n---\n");
    };
    const variant = (text) => {
      const item = document.createElement("li");
      const n = list.childElementCount + 1;
      const area = document.createElement("textarea");
      area.className = "code";
      area.rows = 2;
      area.value = text;
      area.id = values.id + "-variant-" + Date.now() + "-" + n;
      area.setAttribute("aria-label", "Prompt variant");
      area.addEventListener("input", write);
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "small danger";
      remove.textContent = "Remove";
      remove.addEventListener("click", () => {
        item.remove();
        write();
        add.focus();
      });
      item.append(area, remove);
      list.appendChild(item);
      return area;
    };
    (parts.length ? parts : [""]).forEach(variant);
    add.addEventListener("click", () => {
      variant("").focus();
      write();
    });
    box.append(list, add);
  }

  const list = section.querySelector("[data-forms]");
  list.querySelectorAll("[data-form]").forEach(setup);
  new MutationObserver((changes) =>
    changes.forEach((change) => change.addedNodes.forEach((node) => node.nodeType === 1 && node.matches("[data-form]") && setup(node))),
  ).observe(list, { childList: true });
})();
