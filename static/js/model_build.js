// While the bundled model builds, the dashboard reloads itself every 10 s to show
// the current step and elapsed time (the server reads them from the build's status).
(function () {
  "use strict";
  const card = document.getElementById("model-build");
  if (card && card.dataset.state === "building") setTimeout(() => location.reload(), 10000);
})();
