// Sortable tables: a button in each header cell sorts by that column; a second
// press reverses. Cells may carry data-sort with the value to sort by.
(function () {
  "use strict";

  function value(row, index) {
    const cell = row.cells[index];
    if (!cell) return "";
    return cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
  }

  function compare(a, b) {
    if (a === "" || b === "") return a === b ? 0 : a === "" ? 1 : -1; // blanks last
    const x = Number(a);
    const y = Number(b);
    if (Number.isFinite(x) && Number.isFinite(y)) return x - y;
    return a.localeCompare(b, undefined, { numeric: true });
  }

  function sortBy(table, header, status) {
    const index = header.cellIndex;
    const descending = header.getAttribute("aria-sort") === "ascending";
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    rows.sort((r1, r2) => {
      const a = value(r1, index);
      const b = value(r2, index);
      const order = compare(a, b);
      // Blanks stay last whichever the direction.
      return a === "" || b === "" ? order : descending ? -order : order;
    });
    rows.forEach((row) => body.appendChild(row));
    table.querySelectorAll("thead th").forEach((th) => th.removeAttribute("aria-sort"));
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
    if (status) {
      status.textContent = "Sorted by " + header.textContent.trim() + ", " + (descending ? "descending" : "ascending");
    }
  }

  document.querySelectorAll("table[data-sortable]").forEach((table) => {
    const status = document.getElementById("sort-status");
    table.querySelectorAll("thead th button.sort").forEach((button) => {
      button.addEventListener("click", () => sortBy(table, button.closest("th"), status));
    });
  });
})();
