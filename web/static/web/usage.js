// The usage page's range picker: choosing a date switches the range to "Custom dates",
// choosing a preset marks the dates as not in use (they are ignored by the server).
(function () {
  "use strict";
  function sync(form) {
    var select = form.querySelector("[data-range-select]");
    if (!select) return;
    form.setAttribute("data-range", select.value === "custom" ? "custom" : "preset");
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-usage-range]").forEach(function (form) {
      var select = form.querySelector("[data-range-select]");
      sync(form);
      if (select) select.addEventListener("change", function () { sync(form); });
      form.querySelectorAll("[data-custom-date]").forEach(function (input) {
        input.addEventListener("change", function () {
          if (select) { select.value = "custom"; sync(form); }
        });
      });
    });
  });
})();
