// The leaderboard's compare form: the button works once exactly two runs are
// ticked; ticking a third unticks the one ticked first (so two stay ticked).
(function () {
  "use strict";
  const form = document.getElementById("compare-form");
  if (!form) return;
  const button = document.getElementById("compare-ticked");
  const ticked = [];

  function refresh() {
    button.disabled = ticked.length !== 2;
    button.title = ticked.length === 2 ? "" : "Tick two runs to compare them";
  }

  form.addEventListener("change", (event) => {
    const box = event.target;
    if (box.name !== "run") return;
    const at = ticked.indexOf(box);
    if (box.checked && at < 0) ticked.push(box);
    if (!box.checked && at >= 0) ticked.splice(at, 1);
    if (ticked.length > 2) ticked.shift().checked = false;
    refresh();
  });
  refresh();
})();
