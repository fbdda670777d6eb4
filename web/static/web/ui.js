// rbee dashboard (/ui): behaviour of the fleet page. No inline script (strict CSP).
(function () {
  "use strict";
  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }
  // Forms inside live fragments (pushed over the websocket, rendered without a
  // request) get the page's CSRF token as they are submitted.
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.matches || !form.matches("form[data-csrf]")) return;
    if (!form.querySelector('input[name="csrfmiddlewaretoken"]')) {
      var input = document.createElement("input");
      input.type = "hidden";
      input.name = "csrfmiddlewaretoken";
      input.value = csrf();
      form.appendChild(input);
    }
  }, true);
  // The spawn form lists only the chosen hive's devices.
  function filterDevices(form) {
    var hive = form.querySelector("[data-hive-select]");
    var device = form.querySelector('select[name="device"]');
    if (!hive || !device) return;
    var firstVisible = null;
    var own = Array.prototype.some.call(device.options, function (opt) {
      return opt.getAttribute("data-for-hive") === hive.value;
    });
    Array.prototype.forEach.call(device.options, function (opt) {
      var owner = opt.getAttribute("data-for-hive");
      // "cpu (any hive)" only for a hive that has reported no devices yet.
      var show = owner === hive.value || (owner === "*" && !own);
      opt.hidden = !show;
      opt.disabled = !show;
      if (show && !firstVisible) firstVisible = opt;
    });
    var current = device.options[device.selectedIndex];
    if (!current || current.disabled) {
      if (firstVisible) firstVisible.selected = true;
    }
  }
  document.addEventListener("change", function (e) {
    if (e.target.matches && e.target.matches("[data-hive-select]")) {
      filterDevices(e.target.form);
    }
  });
  function init() {
    document.querySelectorAll("form[data-device-picker]").forEach(filterDevices);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
