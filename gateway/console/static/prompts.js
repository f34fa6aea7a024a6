// Experiments: one lifecycle form with a button per action (formaction), each confirmed with its own words.
"use strict";

(function () {
  document.addEventListener("submit", (event) => {
    const button = event.submitter;
    if (button instanceof HTMLButtonElement && button.dataset.confirm && !window.confirm(button.dataset.confirm)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);
})();
