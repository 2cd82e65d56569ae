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
    // Once each: a refreshed region keeps the forms someone is editing.
    var confirms = root.querySelectorAll("form[data-confirm]:not([data-confirm-bound])");
    for (var i = 0; i < confirms.length; i++) {
      confirms[i].setAttribute("data-confirm-bound", "");
      confirms[i].addEventListener("submit", function (event) {
        if (!window.confirm(this.dataset.confirm)) event.preventDefault();
      });
    }
    var posts = root.querySelectorAll("form[method=post]:not([data-size-bound])");
    for (var j = 0; j < posts.length; j++) {
      posts[j].setAttribute("data-size-bound", "");
      posts[j].addEventListener("submit", checkNumbers);
      posts[j].addEventListener("submit", checkSize);
    }
  }

  // -- a number the browser cannot read ----------------------------------------------
  // A number input holding what is no number ("1e", "--5") has the value "", and the
  // form would send it as empty: the field's default (a priority of 0, no score)
  // instead of what was typed. Such a form is not sent: it says so beside the field,
  // with everything typed still in it.

  function checkNumbers(event) {
    var form = event.target;
    var old = form.querySelectorAll("[data-number-error]");
    for (var i = 0; i < old.length; i++) old[i].remove();
    var first = null;
    var numbers = form.querySelectorAll("input[type=number]");
    for (var j = 0; j < numbers.length; j++) {
      var input = numbers[j];
      if (!input.validity || !input.validity.badInput) continue;
      first = first || input;
      var note = document.createElement("div");
      note.className = "error";
      note.setAttribute("role", "alert");
      note.setAttribute("data-number-error", "");
      note.textContent = "This is not a number, so the form was not sent: type a number, or empty the field.";
      input.parentNode.appendChild(note);
      // Gone as soon as the field changes: it would otherwise stand beside a good number.
      input.addEventListener("input", dropNote(note), { once: true });
    }
    if (!first) return;
    event.preventDefault();
    first.focus();
  }

  function dropNote(note) {
    return function () { note.remove(); };
  }

  // -- a form larger than the dashboard takes ----------------------------------------
  // The dashboard refuses a request over its max_body with 413, on a page that cannot
  // keep what was typed. A form that large is not sent: it says so where it is, with
  // everything typed still in it.

  function checkSize(event) {
    var meta = document.querySelector("meta[name=wfe-max-body]");
    var limit = meta ? parseInt(meta.content, 10) : 0;
    if (!limit || event.defaultPrevented) return;
    var form = event.target;
    var size = formSize(form);
    var old = form.querySelector("[data-size-error]");
    if (old) old.remove();
    if (size.total <= limit) return;
    event.preventDefault();
    var note = document.createElement("div");
    note.className = "error form-error";
    note.setAttribute("role", "alert");
    note.setAttribute("data-size-error", "");
    var where = size.file ? form.querySelector("input[type=file]") : null;
    note.textContent = (size.file ? size.file.name + " is " + human(size.file.size) : "This form holds " + human(size.total)) +
      ", more than the " + human(limit) + " this dashboard takes" + (size.file ? " with the rest of the form" : "") +
      ", so it was not sent. " + (size.file ? "Choose a smaller file." : "Send less.");
    if (where) where.parentNode.appendChild(note);
    else form.insertBefore(note, form.firstChild);
    note.scrollIntoView({ block: "nearest" });
  }

  // The size of the body the browser would send for the form: exact for a plain form,
  // at least its values and files for one with a file input.
  function formSize(form) {
    var data = new FormData(form);
    if ((form.getAttribute("enctype") || "").indexOf("multipart") < 0) {
      return { total: new URLSearchParams(data).toString().length, file: null };
    }
    var total = 0;
    var largest = null;
    data.forEach(function (value) {
      if (typeof value === "string") {
        total += new Blob([value]).size;
        return;
      }
      total += value.size;
      if (value.size && (!largest || value.size > largest.size)) largest = value;
    });
    return { total: total, file: largest };
  }

  function human(bytes) {
    var units = ["B", "KiB", "MiB", "GiB"];
    var size = bytes;
    for (var i = 0; i < units.length; i++) {
      if (size < 1024 || i === units.length - 1) return i ? size.toFixed(1) + " " + units[i] : size + " B";
      size /= 1024;
    }
  }

  // A region reloads its own HTML (the server sends just the region when asked
  // with X-WFE-Partial) so the page updates without losing scroll or filters.
  // What a person is editing keeps its place (and what they typed) while the rest
  // of the region updates; a notice says when the page stops updating, and why.
  function liveRegion(region) {
    var url = region.dataset.refresh;
    var every = parseInt(region.dataset.refreshMs, 10) || 2000;
    var last = null;

    function schedule() { window.setTimeout(tick, every); }

    function tick() {
      if (document.hidden || holdAll(region)) { schedule(); return; }
      fetch(url, { headers: { "X-WFE-Partial": "1" }, credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          var login = loginUrl(response);
          if (login) throw new Refusal("session", login);
          // A task deleted while its page is open answers 404 with a region saying so.
          var gone = response.status === 404 && response.headers.get("X-WFE-Gone") === "1";
          if (!response.ok && !gone) {
            throw new Refusal("error", response.status + " " + response.statusText +
              errorText(response.headers.get("X-WFE-Error")));
          }
          if (response.redirected) throw new Refusal("down", "the dashboard sent this page elsewhere");
          inboxBadge(response.headers.get("X-WFE-Inbox"));
          kafkaChip(response.headers.get("X-WFE-Kafka"));
          return response.text();
        })
        .then(function (html) {
          liveNotice(null);
          if (html === last) return;
          last = html;
          var open = [];
          var details = region.querySelectorAll("details[id]");
          for (var i = 0; i < details.length; i++) open.push([details[i].id, details[i].open]);
          refill(region, html);
          open.forEach(function (pair) {
            var el = document.getElementById(pair[0]);
            if (el) el.open = pair[1];
          });
          enhance(region);
          region.dispatchEvent(new CustomEvent("wfe:refreshed", { bubbles: true }));
        })
        .catch(function (error) {
          // Keep the page as it is, say so, and try again later.
          if (error instanceof Refusal) liveNotice(error.kind, error.detail);
          else liveNotice("down", "the dashboard cannot be reached");
        })
        .then(schedule);
    }
    schedule();
  }

  // Why the dashboard refused a refresh (X-WFE-Error, a JSON string), as ": why".
  function errorText(header) {
    if (!header) return "";
    try { return ": " + JSON.parse(header); } catch (e) { return ""; }
  }

  function Refusal(kind, detail) {
    this.kind = kind;
    this.detail = detail;
  }

  // Where to log in, when a refresh was refused for want of a login: the dashboard
  // answers 401 with X-WFE-Login (a proxy may have sent the request to the login page).
  function loginUrl(response) {
    var header = response.headers.get("X-WFE-Login");
    if (response.status === 401 && header) return header;
    var landed = new URL(response.url).pathname;
    if (response.redirected && /\/login$/.test(landed)) return landed;
    return null;
  }

  // -- what a person is editing ----------------------------------------------------
  // An edit scope (an inbox card, a task's answer section) is being edited while a
  // field of it has the focus or differs from what the page gave it. Typed and then
  // cleared again, it is not.

  function changed(field) {
    if (field.type === "hidden" || field.type === "submit" || field.type === "button") return false;
    if (field.type === "checkbox" || field.type === "radio") return field.checked !== field.defaultChecked;
    if (field.tagName === "SELECT") {
      for (var i = 0; i < field.options.length; i++) {
        var option = field.options[i];
        var shown = option.defaultSelected || (!field.multiple && i === 0 && !hasDefault(field));
        if (option.selected !== shown) return true;
      }
      return false;
    }
    return "defaultValue" in field && field.value !== field.defaultValue;
  }

  function hasDefault(select) {
    for (var i = 0; i < select.options.length; i++) if (select.options[i].defaultSelected) return true;
    return false;
  }

  function isField(el) {
    return !!el && el.matches && el.matches("input, textarea, select");
  }

  function editing(scope) {
    if (isField(document.activeElement) && scope.contains(document.activeElement)) return true;
    var fields = scope.querySelectorAll("input, textarea, select");
    for (var i = 0; i < fields.length; i++) if (changed(fields[i])) return true;
    return false;
  }

  // A field being edited outside any edit scope holds the whole region still.
  function holdAll(region) {
    var active = document.activeElement;
    return isField(active) && region.contains(active) && !active.closest("[data-edit-scope]");
  }

  // Put the region's new HTML in place, keeping the scopes being edited where they
  // are: they are never taken out of the page, which would lose the focus.
  function refill(region, html) {
    var kept = [];
    for (var i = 0; i < region.children.length; i++) {
      var child = region.children[i];
      if (child.matches("[data-edit-scope]") && editing(child)) kept.push(child);
    }
    if (!kept.length) { region.innerHTML = html; return; }
    var fresh = document.createElement("template");
    fresh.innerHTML = html;
    var incoming = fresh.content;
    kept.forEach(function (scope) {
      var marker = document.createElement("wfe-kept");
      var twin = scope.id ? incoming.getElementById(scope.id) : null;
      if (twin && twin.parentNode === incoming) {
        incoming.replaceChild(marker, twin);
        scope.classList.remove("edit-orphan");
      } else {
        // Its task no longer waits here (answered elsewhere, say): it stays, marked,
        // about where it was.
        orphan(scope);
        var at = Array.prototype.indexOf.call(region.children, scope);
        incoming.insertBefore(marker, incoming.children[at] || null);
      }
      marker.scope = scope;
    });
    var nodes = Array.prototype.slice.call(region.childNodes);
    nodes.forEach(function (node) { if (kept.indexOf(node) < 0) region.removeChild(node); });
    var next = 0;
    Array.prototype.slice.call(incoming.childNodes).forEach(function (node) {
      if (node.scope) {
        if (node.scope === kept[next]) next++;
        return;
      }
      region.insertBefore(node, kept[next] || null);
    });
  }

  function orphan(scope) {
    if (scope.classList.contains("edit-orphan")) return;
    scope.classList.add("edit-orphan");
    var note = document.createElement("p");
    note.className = "orphan-note";
    note.textContent = "This task no longer waits for this answer here; sending it will say what became of it.";
    scope.insertBefore(note, scope.firstChild);
  }

  // -- the notice when the page stops updating -------------------------------------

  var lastUpdated = new Date();

  function clock(date) {
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return two(date.getHours()) + ":" + two(date.getMinutes()) + ":" + two(date.getSeconds());
  }

  function liveNotice(kind, detail) {
    var notice = document.getElementById("wfe-live-notice");
    if (!kind) {
      lastUpdated = new Date();
      if (notice) notice.remove();
      document.body.classList.remove("wfe-stale");
      return;
    }
    if (!notice) {
      notice = document.createElement("div");
      notice.id = "wfe-live-notice";
      notice.className = "live-notice";
      notice.setAttribute("role", "alert");
      var main = document.querySelector("main") || document.body;
      main.insertBefore(notice, main.firstChild);
    }
    document.body.classList.add("wfe-stale");
    notice.dataset.kind = kind;
    notice.textContent = "";
    if (kind === "session") {
      notice.appendChild(document.createTextNode(
        "Your session has ended (the dashboard restarted, or you logged out), so this page " +
        "stopped updating at " + clock(lastUpdated) + ". "));
      var link = document.createElement("a");
      link.href = detail + (detail.indexOf("?") < 0 ? "?" : "&") + "next=" +
        encodeURIComponent(window.location.pathname + window.location.search);
      link.textContent = "Log in again";
      notice.appendChild(link);
      notice.appendChild(document.createTextNode("."));
    } else if (kind === "error") {
      // It answered, so the connection is fine: say what it answered.
      notice.textContent = "The dashboard answered " + detail.replace(/\.$/, "") +
        ". This page was last updated at " + clock(lastUpdated) + "; trying again.";
    } else {
      notice.textContent = "Connection lost: " + detail + ". This page was last updated at " +
        clock(lastUpdated) + "; trying again.";
    }
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
        // A phase belongs to one workflow: another workflow drops the phase filter.
        var drops = this.getAttribute("data-drops");
        var dropped = drops ? form.querySelector("input[name=" + drops + "]") : null;
        if (dropped) dropped.remove();
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
