// Keys for the side-by-side view: j / k move between rows, ← / → follow the
// previous / next page link, / jumps to the search box. Keys typed into a form
// field are left alone.
(function () {
  "use strict";
  const table = document.getElementById("matrix");
  if (!table) return;
  const rows = () => Array.from(table.tBodies[0].querySelectorAll("tr[tabindex]"));

  function move(step) {
    const all = rows();
    const at = all.indexOf(document.activeElement.closest("tr"));
    const next = all[Math.min(all.length - 1, Math.max(0, at + step))];
    if (next) next.focus();
  }

  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    if (event.target.closest("input, select, textarea")) return;
    const link = document.querySelector(`.pages a[data-key="${event.key}"]`);
    if (event.key === "j" || event.key === "k") move(event.key === "j" ? 1 : -1);
    else if (event.key === "/") document.getElementById("matrix-q").focus();
    else if (link) link.click();
    else return;
    event.preventDefault();
  });
})();
