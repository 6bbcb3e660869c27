// The experiment editor: add, remove and reorder formset rows, and check
// templates as they are typed. The server checks everything again on save.
(function () {
  "use strict";

  const form = document.getElementById("experiment-form");
  if (!form) return;
  const checkUrl = form.dataset.checkUrl;
  const datasetVariables = form.dataset.variables.split(",").filter(Boolean);
  const known = new Set(datasetVariables.concat(form.dataset.builtins.split(",")));
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;

  function setupFormset(section) {
    const total = section.querySelector("input[name$='-TOTAL_FORMS']");
    const list = section.querySelector("[data-forms]");
    const template = section.querySelector("template[data-empty-form]");
    const isStages = section.dataset.formset === "stages";

    function rows() {
      return Array.from(list.children).filter((el) => el.hasAttribute("data-form"));
    }

    function renumber() {
      rows().forEach((row, index) => {
        const order = row.querySelector("input[name$='-ORDER']");
        if (order) order.value = index + 1;
        const number = row.querySelector("[data-number]");
        if (number) number.textContent = index + 1;
        const up = row.querySelector("[data-move=up]");
        const down = row.querySelector("[data-move=down]");
        if (up) up.disabled = index === 0;
        if (down) down.disabled = index === rows().length - 1;
      });
    }

    function wire(row) {
      row.querySelectorAll(".order-field").forEach((el) => el.classList.add("hidden"));
      const remove = row.querySelector("input[name$='-DELETE']");
      if (remove) {
        const sync = () => row.classList.toggle("removed", remove.checked);
        remove.addEventListener("change", sync);
        sync();
      }
      row.querySelectorAll("[data-move]").forEach((button) => {
        button.addEventListener("click", () => {
          const sibling = button.dataset.move === "up" ? row.previousElementSibling : row.nextElementSibling;
          if (!sibling) return;
          if (button.dataset.move === "up") list.insertBefore(row, sibling);
          else list.insertBefore(sibling, row);
          renumber();
          if (button.disabled) row.querySelector("[data-move]:not(:disabled)")?.focus();
          else button.focus();
        });
      });
      row.querySelectorAll("textarea[data-template]").forEach(setupTemplateCheck);
      const name = row.querySelector("input[name$='-name']");
      if (isStages && name) name.addEventListener("input", () => retitle(row, name.value));
      const type = row.querySelector("select[name$='-type']");
      if (type) setupCostBadge(section, row, type);
    }

    section.querySelector("[data-add-form]").addEventListener("click", () => {
      const index = parseInt(total.value, 10);
      const holder = document.createElement("div");
      holder.innerHTML = template.innerHTML.replace(/__prefix__/g, String(index));
      const row = holder.firstElementChild;
      list.appendChild(row);
      total.value = index + 1;
      wire(row);
      renumber();
      row.querySelector("input[type=text], textarea, select")?.focus();
    });

    rows().forEach(wire);
    renumber();
  }

  function retitle(row, name) {
    const heading = row.querySelector("h3");
    const number = heading.querySelector("[data-number]").outerHTML;
    heading.innerHTML = "Stage " + number + (name ? ": " : "");
    if (name) {
      const title = document.createElement("span");
      title.textContent = name;
      heading.appendChild(title);
    }
  }

  function setupCostBadge(section, row, select) {
    const costly = new Set((section.dataset.costly || "").split(",").filter(Boolean));
    const badge = row.querySelector("[data-cost-badge]");
    const sync = () => badge.classList.toggle("hidden", !costly.has(select.value));
    select.addEventListener("change", sync);
    sync();
  }

  // -- live template check -----------------------------------------------------
  function setupTemplateCheck(area) {
    const status = document.createElement("p");
    status.className = "template-status";
    status.setAttribute("aria-live", "polite");
    status.id = area.id + "_status";
    area.closest(".field").appendChild(status);
    area.setAttribute("aria-describedby", ((area.getAttribute("aria-describedby") || "") + " " + status.id).trim());
    let timer = null;
    let sent = 0;
    const check = () => {
      const row = area.closest("[data-form]");
      const stage = row.querySelector("input[name$='-name']")?.value || "?";
      const field = area.name.endsWith("-system") ? "system" : "user";
      const ticket = ++sent;
      fetch(checkUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        body: JSON.stringify({ source: area.value, where: "Stage '" + stage + "' " + field + " template" }),
        credentials: "same-origin",
      })
        .then((response) => response.json())
        .then((result) => {
          if (ticket === sent) showResult(status, area, result);
        })
        .catch(() => {
          status.textContent = "";
        });
    };
    area.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(check, 350);
    });
    if (area.value.trim()) check();
  }

  function showResult(status, area, result) {
    status.replaceChildren();
    status.classList.toggle("ok", result.ok);
    status.classList.toggle("bad", !result.ok);
    area.setAttribute("aria-invalid", result.ok ? "false" : "true");
    if (!result.ok) {
      status.textContent = result.error;
      return;
    }
    if (!area.value.trim()) return;
    status.append("✓ Template is valid.");
    const used = result.variables || [];
    if (!used.length) return;
    status.append(" Uses: ");
    used.forEach((name) => {
      const code = document.createElement("code");
      code.textContent = name;
      if (datasetVariables.length && !known.has(name)) {
        code.className = "unknown";
        code.title = "Not a dataset variable";
      }
      status.append(code, " ");
    });
  }

  form.querySelectorAll("[data-formset]").forEach(setupFormset);
})();
