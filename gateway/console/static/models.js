// Catalog models: the register/edit form shows the fields of the chosen type (and provider) only.
// Elements with data-toggle-by="<field name>" data-toggle-values="a b" are hidden unless that field's value
// is one of the listed ones. The server reads only the fields of the chosen type, whatever is sent.
"use strict";

(function () {
  function sync(form) {
    form.querySelectorAll("[data-toggle-by]").forEach((el) => {
      const field = form.elements.namedItem(el.dataset.toggleBy);
      if (!field || !("value" in field)) return;
      const values = (el.dataset.toggleValues || "").split(/\s+/);
      el.hidden = !values.includes(field.value);
    });
  }

  function wire(form) {
    form.addEventListener("change", () => sync(form));
    sync(form);
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("form[data-model-form]").forEach(wire);
  });
})();
