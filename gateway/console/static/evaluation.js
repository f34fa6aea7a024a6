// Evaluation: on the new-run form, the judge and review settings open for the run types that use them.
"use strict";

(function () {
  function sync() {
    const type = document.getElementById("f-type");
    if (!type) return;
    document.querySelectorAll("details[data-types]").forEach((box) => {
      if (box.dataset.types.split(" ").includes(type.value)) box.open = true;
    });
  }
  document.addEventListener("change", (event) => {
    if (event.target instanceof HTMLElement && event.target.id === "f-type") sync();
  });
  document.addEventListener("DOMContentLoaded", sync);
})();
