// Training's submit form: show the fieldsets the chosen job type takes ([data-job-types] lists them) and hide
// the rest. The server renders the same state first and builds the job from the type's fields only.
"use strict";

(function () {
  function sync(select) {
    const type = select.value;
    document.querySelectorAll("[data-job-types]").forEach((el) => {
      el.hidden = !el.dataset.jobTypes.split(" ").includes(type);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const select = document.querySelector("#job-form select[name=jobType]");
    if (!select) return;
    select.addEventListener("change", () => sync(select));
    sync(select);
  });
})();
