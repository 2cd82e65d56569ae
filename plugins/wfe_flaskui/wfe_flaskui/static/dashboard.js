// wfe dashboard: self-refreshing regions, relative times and small form helpers.
// Pages work without it; it only makes them live.
(function () {
  "use strict";

  var units = [[60, "s", 1], [3600, "min", 60], [86400, "h", 3600], [Infinity, "d", 86400]];

  function relative(iso) {
    var then = Date.parse(iso);
    if (isNaN(then)) return null;
    var diff = (Date.now() - then) / 1000;
    var future = diff < 0;
    diff = Math.abs(diff);
    if (diff < 5) return future ? "in a moment" : "just now";
    for (var i = 0; i < units.length; i++) {
      if (diff < units[i][0]) {
        var n = Math.floor(diff / units[i][2]);
        var text = n + " " + units[i][1];
        return future ? "in " + text : text + " ago";
      }
    }
    return null;
  }

  function updateTimes(root) {
    var times = root.querySelectorAll("time.wfe-time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var el = times[i];
      if (!el.dataset.absolute) {
        el.dataset.absolute = el.textContent;
        el.title = el.textContent;
      }
      var rel = relative(el.getAttribute("datetime"));
      if (rel) el.textContent = rel;
    }
  }

  function enhance(root) {
    updateTimes(root);
    var confirms = root.querySelectorAll("form[data-confirm]");
    for (var i = 0; i < confirms.length; i++) {
      confirms[i].addEventListener("submit", function (event) {
        if (!window.confirm(this.dataset.confirm)) event.preventDefault();
      });
    }
  }

  // A region reloads its own HTML (the server sends just the region when asked
  // with X-WFE-Partial) so the page updates without losing scroll or filters.
  // It holds still while someone is typing in it.
  function liveRegion(region) {
    var url = region.dataset.refresh;
    var every = parseInt(region.dataset.refreshMs, 10) || 2000;
    var last = null;
    var editing = false;
    region.addEventListener("input", function () { editing = true; });
    region.addEventListener("change", function (event) {
      if (event.target.matches("input, textarea, select")) editing = true;
    });

    function busy() {
      var active = document.activeElement;
      return editing || (active && region.contains(active) && active.matches("input, textarea, select"));
    }

    function schedule() { window.setTimeout(tick, every); }

    function tick() {
      if (document.hidden || busy()) { schedule(); return; }
      fetch(url, { headers: { "X-WFE-Partial": "1" }, credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          // A task deleted while its page is open answers 404 with a region saying so.
          var gone = response.status === 404 && response.headers.get("X-WFE-Gone") === "1";
          if ((!response.ok && !gone) || response.redirected) throw new Error("refresh failed");
          inboxBadge(response.headers.get("X-WFE-Inbox"));
          kafkaChip(response.headers.get("X-WFE-Kafka"));
          return response.text();
        })
        .then(function (html) {
          if (html === last || busy()) return;
          last = html;
          var open = [];
          var details = region.querySelectorAll("details[id]");
          for (var i = 0; i < details.length; i++) open.push([details[i].id, details[i].open]);
          region.innerHTML = html;
          open.forEach(function (pair) {
            var el = document.getElementById(pair[0]);
            if (el) el.open = pair[1];
          });
          enhance(region);
          region.dispatchEvent(new CustomEvent("wfe:refreshed", { bubbles: true }));
        })
        .catch(function () { /* keep the page as it is; try again later */ })
        .then(schedule);
    }
    schedule();
  }

  function inboxBadge(count) {
    var link = document.querySelector(".mainnav a[href$='/inbox']");
    if (!link || count === null) return;
    var pill = link.querySelector(".pill");
    if (count === "0") {
      if (pill) pill.remove();
      return;
    }
    if (!pill) {
      pill = document.createElement("span");
      pill.className = "pill";
      pill.id = "inbox-count";
      link.appendChild(document.createTextNode(" "));
      link.appendChild(pill);
    }
    pill.textContent = count;
  }

  // The header's Kafka chip: a warning while Kafka cannot be reached, with why.
  function kafkaChip(value) {
    var chip = document.getElementById("kafka-chip");
    if (!chip || value === null) return;
    var trouble;
    try { trouble = JSON.parse(value); } catch (e) { return; }
    var down = !!(trouble && trouble.label);
    chip.classList.toggle("chip-warn", down);
    chip.textContent = down ? trouble.label : "kafka";
    chip.title = down ? trouble.title : (chip.dataset.okTitle || "");
  }

  function phaseLists(select) {
    var input = document.getElementById("s-classification");
    if (!input) return;
    select.addEventListener("change", function () {
      // The list's id comes from the server: a workflow name may be no id as it is.
      var chosen = select.options[select.selectedIndex];
      input.setAttribute("list", (chosen && chosen.getAttribute("data-phases")) || "");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    enhance(document);
    var autos = document.querySelectorAll("select[data-autosubmit]");
    for (var i = 0; i < autos.length; i++) {
      autos[i].addEventListener("change", function () {
        var form = this.form;
        var page = form.querySelector("input[name=page]");
        if (page) page.remove();
        form.submit();
      });
    }
    var regions = document.querySelectorAll("[data-refresh]");
    for (var j = 0; j < regions.length; j++) liveRegion(regions[j]);
    var lists = document.querySelectorAll("select[data-phase-lists]");
    for (var k = 0; k < lists.length; k++) phaseLists(lists[k]);
    window.setInterval(function () { updateTimes(document); }, 15000);
  });
})();
